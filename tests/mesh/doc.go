// Package mesh is the end-to-end suite of the node daemon's forwarding, on
// the local lab (internal/lab): two nodes with a real meshlessd each, pods
// wired by the real bridge + host-local + meshless-cni chain. It checks
// same-node, cross-node, service and passthrough connections and the path
// metrics, unix-socket delivery, racing past an endpoint that drops SYNs,
// half-close, 100 MB byte-exact transfers, a daemon crash and restart, and
// malformed tunnel headers. Run as root: go test ./tests/mesh/.
package mesh
