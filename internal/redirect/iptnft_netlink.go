package redirect

import (
	"errors"
	"fmt"
	"os/exec"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Removing iptables-nft rules without the binary.
//
// The uninstall runs from the Meshless image, which is FROM scratch and
// holds no iptables binary, but pods meshed with the iptables backend on a
// host whose iptables is the nft flavor keep their rules in nf_tables
// (tables ip/ip6 nat and mangle, our chains by name, jumps into them from
// the base chains). nf_tables netlink can delete those without the
// binary: a jump of iptables-nft is a native verdict, so our jumps are
// found by their target and deleted by handle, and our chains are flushed
// and deleted. Foreign rules, including those using xtables matches, are
// listed but never touched. The legacy flavor (x_tables) has no such
// interface: without its binary, removal fails and says so.

// iptBinaryMissing reports whether the iptables binary of flavor f is
// absent, in which case Remove of the nft flavor falls back to netlink.
// Explicit binaries (WithIPTablesPaths) are never second-guessed.
func (b *iptBackend) iptBinaryMissing(f Flavor, v6 bool) bool {
	if b.path4 != "" || b.path6 != "" {
		return false
	}
	_, err := exec.LookPath(binaryFor(f, v6))
	return err != nil
}

// removeIPTNFTNetlink deletes our jumps and chains of one family from the
// nf_tables tables iptables-nft writes, in one batch, in the current
// netns. Tables that do not exist hold nothing of ours.
func removeIPTNFTNetlink(v6 bool) error {
	conn, closeNS, err := nftConn()
	if err != nil {
		return err
	}
	defer closeNS()
	fam := nftables.TableFamilyIPv4
	if v6 {
		fam = nftables.TableFamilyIPv6
	}
	ours := map[string]bool{}
	for _, c := range iptChains {
		ours[c.Chain] = true
	}
	chains, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		if isNoNFTables(err) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("nftables: list chains: %w", err)
	}
	queued := 0
	var mine []*nftables.Chain
	for _, c := range chains {
		if !isIPTTable(c.Table.Name) {
			continue
		}
		if ours[c.Name] {
			mine = append(mine, c)
			continue
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			return fmt.Errorf("nftables: list rules of %s/%s: %w", c.Table.Name, c.Name, err)
		}
		for _, r := range rules {
			if jumpsInto(r, ours) {
				if err := conn.DelRule(r); err != nil {
					return fmt.Errorf("nftables: delete jump in %s/%s: %w", c.Table.Name, c.Name, err)
				}
				queued++
			}
		}
	}
	// Jumps go before the chains in the same batch: a chain that is still
	// jumped to cannot be deleted.
	for _, c := range mine {
		conn.FlushChain(c)
		conn.DelChain(c)
		queued++
	}
	if queued == 0 {
		return nil
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete iptables-nft rules: %w", err)
	}
	return nil
}

func isIPTTable(name string) bool {
	for _, t := range iptTables {
		if t == name {
			return true
		}
	}
	return false
}

// jumpsInto reports whether rule r jumps (or goes) to one of our chains.
func jumpsInto(r *nftables.Rule, ours map[string]bool) bool {
	for _, e := range r.Exprs {
		v, ok := e.(*expr.Verdict)
		if ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && ours[v.Chain] {
			return true
		}
	}
	return false
}
