package plugin

import "testing"

func TestParseArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    podArgs
		wantErr bool
	}{
		{in: "", want: podArgs{}},
		{
			in:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5",
			want: podArgs{Namespace: "default", Name: "web-0", UID: "1234-5"},
		},
		{in: "K8S_POD_NAME=a=b;", want: podArgs{Name: "a=b"}},
		{in: "K8S_POD_NAMESPACE=;K8S_POD_NAME=x", want: podArgs{Name: "x"}},
		{in: "K8S_POD_NAMESPACE", wantErr: true},
		{in: "=value", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseArgs(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseArgs(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("parseArgs(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}
