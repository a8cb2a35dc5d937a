package redirect

import "testing"

func TestChoose(t *testing.T) {
	none := Detection{}
	tests := []struct {
		name       string
		mode       Mode
		host, pod  Detection
		wantMode   Mode
		wantFlavor Flavor
	}{
		{"clean everywhere", ModeAuto, none, none, ModeNFTables, ""},
		{"our table in pod wins", ModeAuto, Detection{Legacy: true}, Detection{Meshless: true}, ModeNFTables, ""},
		{"legacy in pod", ModeAuto, none, Detection{Legacy: true}, ModeIPTables, FlavorLegacy},
		{"legacy before nft in pod", ModeAuto, none, Detection{Legacy: true, IPTablesNFT: true}, ModeIPTables, FlavorLegacy},
		{"iptables-nft in pod", ModeAuto, Detection{Legacy: true}, Detection{IPTablesNFT: true}, ModeIPTables, FlavorNFT},
		{"host legacy", ModeAuto, Detection{Legacy: true, IPTablesNFT: true}, none, ModeIPTables, FlavorLegacy},
		{"host iptables-nft", ModeAuto, Detection{IPTablesNFT: true}, none, ModeIPTables, FlavorNFT},
		{"host has only native nftables", ModeAuto, Detection{Meshless: true}, none, ModeNFTables, ""},
		{"no nf_tables", ModeAuto, none, Detection{NoNFTables: true}, ModeIPTables, FlavorLegacy},
		{"iptables mode defaults to nft flavor", ModeIPTables, none, none, ModeIPTables, FlavorNFT},
		{"iptables mode ignores our nft table", ModeIPTables, none, Detection{Meshless: true}, ModeIPTables, FlavorNFT},
		{"iptables mode host legacy", ModeIPTables, Detection{Legacy: true}, none, ModeIPTables, FlavorLegacy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, f := choose(tt.mode, tt.host, tt.pod)
			if m != tt.wantMode || f != tt.wantFlavor {
				t.Errorf("choose(%s, host %s, pod %s) = %s/%q, want %s/%q", tt.mode, tt.host, tt.pod, m, f, tt.wantMode, tt.wantFlavor)
			}
		})
	}
}

func TestDetectionString(t *testing.T) {
	if s := (Detection{}).String(); s != "none" {
		t.Errorf("zero Detection = %q, want none", s)
	}
	if s := (Detection{Legacy: true, IPTablesNFT: true}).String(); s != "iptables-legacy,iptables-nft" {
		t.Errorf("got %q", s)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		mode Mode
		opts []Option
	}{
		{"unknown mode", "ebpf", []Option{WithHost(Detection{})}},
		{"unknown flavor", ModeIPTables, []Option{WithIPTablesFlavor("xt")}},
		{"one path", ModeIPTables, []Option{WithIPTablesPaths("iptables", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.mode, tt.opts...); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

func TestNewNames(t *testing.T) {
	for mode, want := range map[Mode]string{ModeNFTables: "nftables", ModeIPTables: "iptables", ModeAuto: "auto", "": "auto"} {
		b, err := New(mode, WithHost(Detection{}), WithIPTablesFlavor(FlavorNFT))
		if err != nil {
			t.Fatalf("New(%q): %v", mode, err)
		}
		if b.Name() != want {
			t.Errorf("New(%q).Name() = %q, want %q", mode, b.Name(), want)
		}
	}
}
