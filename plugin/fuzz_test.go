package plugin

import (
	"errors"
	"testing"
)

// FuzzParseConfig feeds the plugin's stdin decoder (the network
// configuration, prevResult and runtimeConfig with the pod's annotations,
// all from the runtime) arbitrary bytes: it never panics, and what it
// accepts has the pod's exclusions decodable too (annotations included).
// The seeds under testdata/fuzz replay with go test.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"k8s","type":"meshless-cni"}`,
		`{"cniVersion":"1.0.0","name":"k8s","type":"meshless-cni","redirect":"nftables","failOpen":true,` +
			`"excludeInboundPorts":[22],"excludeOutboundPorts":[53],"excludeOutboundCIDRs":["10.0.0.0/8","fd00::1"],` +
			`"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"meshless.io/exclude-inbound-ports":"8081, 9090","meshless.io/mesh":"disabled"}},` +
			`"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"198.19.1.2/24","interface":0}]}}`,
		`{"cniVersion":"0.4.0","name":"k8s","type":"meshless-cni","excludeInboundPorts":[70000]}`,
		`{"cniVersion":"1.1.0","name":"k8s","type":"meshless-cni","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"meshless.io/exclude-outbound-cidrs":"::/0,0.0.0.0/0"}}}`,
		`{`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		conf, err := parseConfig(b)
		if err != nil {
			var de *decodeError
			var ce *configError
			if !errors.As(err, &de) && !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is neither a decoding nor a configuration error: the CNI code would be wrong", err, err)
			}
			return
		}
		conf.podExclusions() // must not panic; errors are the annotations' own
	})
}
