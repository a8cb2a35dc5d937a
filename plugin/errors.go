package plugin

import (
	"errors"
	"net/http"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
)

// errNotChained: the plugin only makes sense after a primary plugin.
var errNotChained = &configError{msg: "meshless-cni must be chained after a primary CNI plugin (bridge, flannel, calico, ...): prevResult is missing"}

// cniError turns a non-nil internal error into the CNI error the runtime
// acts on. This is the only place where codes are chosen.
func cniError(op string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	code := types.ErrInternal
	var (
		de *decodeError
		ce *configError
		se *cniapi.StatusError
		nx ns.NSPathNotExistErr
		nn ns.NSPathNotNSErr
	)
	switch {
	case errors.As(err, &de):
		code = types.ErrDecodingFailure
	case errors.As(err, &ce):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, cniapi.ErrUnreachable):
		// The daemon is down or restarting: the runtime retries the ADD.
		code = types.ErrTryAgainLater
	case errors.As(err, &se):
		switch {
		case se.Code == http.StatusBadRequest:
			code = types.ErrInvalidNetworkConfig
		case se.Code == http.StatusServiceUnavailable:
			code = types.ErrTryAgainLater
		}
	case errors.As(err, &nx), errors.As(err, &nn):
		code = types.ErrInvalidNetNS
	}
	if op == "STATUS" && code != types.ErrDecodingFailure && code != types.ErrInvalidNetworkConfig {
		code = types.ErrPluginNotAvailable
	}
	return types.NewError(code, op+": "+err.Error(), "")
}
