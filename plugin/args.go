package plugin

import (
	"fmt"
	"strings"
)

// podArgs are the Kubernetes identity fields a runtime passes in CNI_ARGS.
type podArgs struct {
	Namespace string
	Name      string
	UID       string
}

// parseArgs reads CNI_ARGS ("K=V;K=V"). Keys other than the K8S_POD_*
// ones are ignored: a chained plugin sees arguments meant for the others.
// A pair without "=" is an error, since it means the runtime sent garbage.
func parseArgs(s string) (podArgs, error) {
	var a podArgs
	if s == "" {
		return a, nil
	}
	for i, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return a, fmt.Errorf("CNI_ARGS: item %d (%q) is not KEY=VALUE", i, pair)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}
