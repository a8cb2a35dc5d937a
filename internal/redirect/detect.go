package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Detection is what Detect found in one network namespace.
//
// The zero Detection means "nothing in use" (a host hint of none).
type Detection struct {
	// Legacy is set when x_tables (iptables-legacy) tables are loaded.
	Legacy bool `json:"legacy,omitempty"`
	// IPTablesNFT is set when nftables holds tables the way iptables-nft
	// makes them: family ip or ip6 named filter, nat, mangle, raw or
	// security. A native nftables table with such a name counts too; the
	// consequence (using iptables-nft there) is harmless.
	IPTablesNFT bool `json:"iptablesNFT,omitempty"`
	// Meshless is set when the nftables backend's table inet meshless
	// exists (meaningful in a pod netns: rules stay with the backend that
	// wrote them).
	Meshless bool `json:"meshless,omitempty"`
	// NoNFTables is set when the kernel refused nftables netlink (no
	// nf_tables); only iptables-legacy can work then.
	NoNFTables bool `json:"noNFTables,omitempty"`
}

// String lists the set fields, or "none", for logs.
func (d Detection) String() string {
	var s []string
	for _, f := range []struct {
		on   bool
		name string
	}{{d.Legacy, "iptables-legacy"}, {d.IPTablesNFT, "iptables-nft"}, {d.Meshless, "meshless-nftables"}, {d.NoNFTables, "no-nftables"}} {
		if f.on {
			s = append(s, f.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

var iptablesNFTTables = []string{"filter", "nat", "mangle", "raw", "security"}

// Detect inspects the network namespace of the calling OS thread. The
// plugin calls it once in the host netns (before entering the pod's) and
// passes the result to New with WithHost; the backends call it again in the
// pod netns. It only reads: it never loads a table.
func Detect() (Detection, error) {
	var d Detection
	for _, v6 := range []bool{false, true} {
		names, err := legacyTables(v6)
		if err != nil {
			return d, err
		}
		d.Legacy = d.Legacy || len(names) > 0
	}
	conn, closeNS, err := nftConn()
	if err != nil {
		return d, err
	}
	defer closeNS()
	tables, err := conn.ListTables()
	if err != nil {
		// Without nf_tables the netlink subsystem is missing; anything else
		// (e.g. EPERM) is a real error the caller must see.
		if isNoNFTables(err) {
			d.NoNFTables = true
			return d, nil
		}
		return d, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		switch {
		case t.Family == nftables.TableFamilyINet && t.Name == nftTableName:
			d.Meshless = true
		case (t.Family == nftables.TableFamilyIPv4 || t.Family == nftables.TableFamilyIPv6) &&
			slices.Contains(iptablesNFTTables, t.Name):
			d.IPTablesNFT = true
		}
	}
	return d, nil
}

// legacyTables returns the x_tables tables loaded in the calling thread's
// netns. It reads /proc/thread-self/net, not /proc/net: /proc/net is
// /proc/self/net, the netns of the process's main thread, which is the host
// even while this thread has entered the pod netns.
func legacyTables(v6 bool) ([]string, error) {
	name := "/proc/thread-self/net/ip_tables_names"
	if v6 {
		name = "/proc/thread-self/net/ip6_tables_names"
	}
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no x_tables in this kernel: nothing loaded
	}
	if err != nil {
		return nil, fmt.Errorf("read legacy tables: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			out = append(out, t)
		}
	}
	return out, sc.Err()
}

// tablePresent reports whether an iptables table (nat, mangle) of a flavor
// and family exists in the calling thread's netns, without creating it.
func tablePresent(f Flavor, v6 bool, table string) (bool, error) {
	if f == FlavorLegacy {
		names, err := legacyTables(v6)
		return slices.Contains(names, table), err
	}
	conn, closeNS, err := nftConn()
	if err != nil {
		return false, err
	}
	defer closeNS()
	fam := nftables.TableFamilyIPv4
	if v6 {
		fam = nftables.TableFamilyIPv6
	}
	tables, err := conn.ListTablesOfFamily(fam)
	if err != nil {
		if isNoNFTables(err) {
			return false, nil
		}
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == table {
			return true, nil
		}
	}
	return false, nil
}

// choose is the auto-detection policy, a pure function of what was found
// on the host and in the pod netns. It returns the backend and, for
// iptables, the flavor. The rules, first match wins:
//
//  1. our nftables table is in the pod: keep nftables (Check and a
//     re-Apply must find the rules where an earlier Apply put them);
//  2. legacy tables in the pod: iptables-legacy. Mixing x_tables and
//     nf_tables NAT in one netns makes the outcome depend on hook order;
//  3. iptables-nft tables in the pod: iptables-nft;
//  4. the host uses iptables-legacy, then iptables-nft: that flavor, so an
//     operator's iptables-save on the node shows the same kind of rules and
//     the kernel needs no other subsystem than the one already in use;
//  5. no nf_tables in the kernel: iptables-legacy;
//  6. otherwise nftables.
//
// For mode iptables, only the flavor matters (rule 1 is skipped, rule 6
// gives iptables-nft).
func choose(mode Mode, host, pod Detection) (Mode, Flavor) {
	switch {
	case mode != ModeIPTables && pod.Meshless:
		return ModeNFTables, ""
	case pod.Legacy:
		return ModeIPTables, FlavorLegacy
	case pod.IPTablesNFT:
		return ModeIPTables, FlavorNFT
	case host.Legacy:
		return ModeIPTables, FlavorLegacy
	case host.IPTablesNFT:
		return ModeIPTables, FlavorNFT
	case pod.NoNFTables:
		return ModeIPTables, FlavorLegacy
	case mode == ModeIPTables:
		return ModeIPTables, FlavorNFT
	}
	return ModeNFTables, ""
}

// binaryFlavor asks an iptables binary which flavor it is
// ("iptables v1.8.9 (nf_tables)" or "(legacy)").
func binaryFlavor(path string) (Flavor, error) {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	if strings.Contains(string(out), "nf_tables") {
		return FlavorNFT, nil
	}
	// Versions before 1.8 print no flavor at all; they are legacy.
	return FlavorLegacy, nil
}
