package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/routes"
)

// FuzzParse feeds the registry decoder outside bytes. Parse must never
// panic or hang; an error must say something; and a file it accepts must
// give a model that builds a routing table (the validator and routes.Build
// agree on what is consistent). The seed corpus is in testdata/fuzz, so
// plain `go test` replays it; run the fuzzer with
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 5m ./daemon/registry/
func FuzzParse(f *testing.F) {
	for _, s := range []string{good, meshGood, "{}", "nodes: []", regWithNodes("a", "b")} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("empty error for %q", b)
			}
			var fe *FieldError
			if errors.As(err, &fe) && (fe.Path == "" || fe.Msg == "") {
				t.Fatalf("field error without path or message: %+v", fe)
			}
			return
		}
		for _, self := range []string{"", "n1"} {
			if _, err := routes.Build(r.ToModel(), self); err != nil {
				t.Fatalf("accepted registry does not build: %v\nfile:\n%s", err, b)
			}
		}
	})
}
