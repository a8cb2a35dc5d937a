package lab

import "fmt"

// CNIBinDir is the lab's CNI_PATH: the reference plugins and meshless-cni,
// as a node's /opt/cni/bin would hold them.
func (l *Lab) CNIBinDir() string { return l.st.CNIBinDir }

// NodeConflist returns the conflist the lab's chain runs on node name,
// bridge then meshless-cni: what a runtime would read from the node's
// /etc/cni/net.d (the lab keeps it in memory), for tools that read a conf
// dir, e.g. meshlessctl check.
func (l *Lab) NodeConflist(name string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.st.node(name)
	if n == nil {
		return nil, fmt.Errorf("no node %q in lab %s", name, l.st.Name)
	}
	c, err := l.st.nodeChain(n)
	if err != nil {
		return nil, err
	}
	return c.Config, nil
}
