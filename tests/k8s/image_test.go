package k8s

// Images without a Docker engine or a registry: a docker-archive tarball
// (manifest.json, the image config, one layer tar) that `ctr images
// import` loads into a node's containerd. Two are built: the e2e apps
// (pause, demo-server, demo-client) and the Meshless image, assembled
// from the binaries of bin/ the way install/kubernetes/Dockerfile lays
// them out.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/tests/harness"
)

const (
	// meshlessImage is the image install/kubernetes/ names: the test
	// builds and imports it under that very name, so the manifests are
	// applied as they are.
	meshlessImage = "meshless/meshless:dev"
	// pauseImage is containerd's default sandbox image, which
	// uninstall.yaml also runs: the e2e image (entrypoint /pause) carries
	// that name too.
	pauseImage = "registry.k8s.io/pause:3.10"
)

// imageSpec is what an image is made of: its names, its files (path in
// the image without a leading slash, content; all mode 0755) and the
// config's Entrypoint, Cmd and Env.
type imageSpec struct {
	Tags       []string
	Files      map[string][]byte
	Entrypoint []string
	Cmd        []string
	Env        []string
}

// dockerArchive returns spec as a docker-archive tarball, the layout
// `docker save` writes and `ctr images import` reads.
func dockerArchive(t *testing.T, spec imageSpec) []byte {
	t.Helper()
	layer := tarOf(t, spec.Files, 0o755)
	layerSum := sha256.Sum256(layer)
	layerDigest := "sha256:" + hex.EncodeToString(layerSum[:])
	cfg := map[string]any{"Entrypoint": spec.Entrypoint, "Env": spec.Env}
	if spec.Cmd != nil {
		cfg["Cmd"] = spec.Cmd
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      "2025-01-01T00:00:00Z",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history":      []map[string]any{{"created": "2025-01-01T00:00:00Z", "created_by": "meshless tests/k8s"}},
	})
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(layerSum[:]) + "/layer.tar"
	manifest, _ := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": spec.Tags, "Layers": []string{layerName}}})
	return tarOf(t, map[string][]byte{"manifest.json": manifest, configName: config, layerName: layer}, 0o644)
}

// importArchive writes archive under the node's dir and imports it into
// containerd's k8s.io namespace, then checks the CRI sees every tag.
func (n *Node) importArchive(name string, archive []byte, tags []string) {
	t := n.t
	t.Helper()
	tarPath := filepath.Join(n.Dir, "image", name+".tar")
	writeFile(t, tarPath, archive)
	if out, err := n.ctr("images", "import", tarPath); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", name, err, out)
	}
	for _, tag := range tags {
		if out, err := n.Crictl("inspecti", tag); err != nil {
			t.Fatalf("the CRI does not see %s: %v\n%s", tag, err, out)
		}
	}
}

// importImage builds the static e2e apps, packs them as one image (also
// named pauseImage: its entrypoint is /pause) and imports it.
func (n *Node) importImage() {
	t := n.t
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(n.Dir, "image")
	files := map[string][]byte{}
	for _, app := range []string{"pause", "demo-server", "demo-client"} {
		out := filepath.Join(work, app)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./tests/apps/"+app)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", app, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files[app] = b
	}
	spec := imageSpec{Tags: []string{e2eImage, pauseImage}, Files: files, Entrypoint: []string{"/pause"}, Env: []string{"PATH=/"}}
	n.importArchive("e2e", dockerArchive(t, spec), spec.Tags)
}

// ImportMeshlessImage imports the Meshless image, built from bins (the
// static binaries of `make build`) as install/kubernetes/Dockerfile
// would build it, under meshlessImage.
func (n *Node) ImportMeshlessImage(bins harness.Bins) {
	t := n.t
	t.Helper()
	t0 := time.Now()
	spec := meshlessImageSpec(t, bins)
	n.importArchive("meshless", dockerArchive(t, spec), spec.Tags)
	var files []string
	for f := range spec.Files {
		files = append(files, "/"+f)
	}
	sort.Strings(files)
	t.Logf("image %s (%v, entrypoint %v, env %v) built and imported in %v", meshlessImage, files, spec.Entrypoint, spec.Env, time.Since(t0).Round(time.Millisecond))
}

// meshlessImageSpec reads the Dockerfile's final stage: the binaries its
// build stage writes to /out/ (go build -o /out/NAME), the folder they
// are copied to, its ENV and its ENTRYPOINT. The same files from bins, at
// the same paths, with the same config: a change of the Dockerfile that
// the test does not follow fails here, not in the cluster.
func meshlessImageSpec(t *testing.T, bins harness.Bins) imageSpec {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "install", "kubernetes", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	final := df[strings.LastIndex(df, "\nFROM "):]
	spec := imageSpec{Tags: []string{meshlessImage}, Files: map[string][]byte{}}
	copyRe := regexp.MustCompile(`(?m)^COPY --from=build /out/ (\S+)$`)
	m := copyRe.FindStringSubmatch(final)
	if m == nil {
		t.Fatalf("Dockerfile: no `COPY --from=build /out/ DIR` in the final stage:\n%s", final)
	}
	dest := strings.Trim(m[1], "/")
	for _, o := range regexp.MustCompile(`-o /out/(\S+)`).FindAllStringSubmatch(df, -1) {
		bin, err := os.ReadFile(bins.Path(o[1]))
		if err != nil {
			t.Fatalf("Dockerfile builds %s: %v (run `make build`)", o[1], err)
		}
		spec.Files[path.Join(dest, o[1])] = bin
	}
	if len(spec.Files) == 0 {
		t.Fatalf("Dockerfile: no `go build -o /out/NAME`")
	}
	for _, e := range regexp.MustCompile(`(?m)^ENV (\S+)$`).FindAllStringSubmatch(final, -1) {
		spec.Env = append(spec.Env, e[1])
	}
	ep := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindStringSubmatch(final)
	if ep == nil || json.Unmarshal([]byte(ep[1]), &spec.Entrypoint) != nil {
		t.Fatalf("Dockerfile: no ENTRYPOINT in exec form in the final stage:\n%s", final)
	}
	if cmd := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindStringSubmatch(final); cmd != nil {
		if err := json.Unmarshal([]byte(cmd[1]), &spec.Cmd); err != nil {
			t.Fatalf("Dockerfile: CMD %s: %v", cmd[1], err)
		}
	}
	return spec
}

// tarOf returns a tar of files (sorted names, fixed times), with an entry
// for every parent folder.
func tarOf(t *testing.T, files map[string][]byte, mode int64) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var addDir func(d string)
	addDir = func(d string) {
		if d == "." || d == "/" || dirs[d] {
			return
		}
		addDir(path.Dir(d))
		dirs[d] = true
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		addDir(path.Dir(name))
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
