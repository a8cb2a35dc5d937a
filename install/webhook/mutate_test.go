package webhook

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/meshlet"
)

// pod is a pod of Meshlet "web" with the given init containers and
// containers (by name), no volume, no annotation.
func pod(inits []string, containers ...string) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{meshlet.LabelMeshlet: "web"}},
	}
	for _, n := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: n, Image: "busybox"})
	}
	for _, n := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "app"})
	}
	return p
}

// apply applies ops to pod as the API server does (the same JSON Patch
// library) and decodes the result.
func apply(t *testing.T, pod *corev1.Pod, ops []Operation) *corev1.Pod {
	t.Helper()
	if len(ops) == 0 {
		return pod
	}
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("decode patch %s: %v", raw, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", raw, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// checkInjected checks that got has exactly one VolumeName (an emptyDir)
// and that every container mounts it exactly once at MountPath.
func checkInjected(t *testing.T, got *corev1.Pod) {
	t.Helper()
	n := 0
	for _, v := range got.Spec.Volumes {
		if v.Name == VolumeName {
			n++
			if v.EmptyDir == nil {
				t.Errorf("volume %s is not an emptyDir: %+v", VolumeName, v)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d volumes %s, want 1: %+v", n, VolumeName, got.Spec.Volumes)
	}
	for _, c := range append(append([]corev1.Container(nil), got.Spec.InitContainers...), got.Spec.Containers...) {
		mounts := 0
		for _, m := range c.VolumeMounts {
			if m.MountPath == MountPath && m.Name == VolumeName && !m.ReadOnly {
				mounts++
			}
		}
		if mounts != 1 {
			t.Errorf("container %s: %d mounts of %s at %s: %+v", c.Name, mounts, VolumeName, MountPath, c.VolumeMounts)
		}
	}
	if got.Annotations[AnnotationMeshletDir] != AnnotationInjected {
		t.Errorf("annotations %v, want %s: %s", got.Annotations, AnnotationMeshletDir, AnnotationInjected)
	}
	if _, ok := got.Annotations[AnnotationReason]; ok {
		t.Errorf("annotation %s on an injected pod", AnnotationReason)
	}
}

func TestMutateInjects(t *testing.T) {
	withVolumes := pod([]string{"init"}, "app", "sidecar")
	withVolumes.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	withVolumes.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	withVolumes.Annotations = map[string]string{"a/b~c": "kept", AnnotationReason: "stale, from a template"}
	for name, p := range map[string]*corev1.Pod{
		"bare":               pod(nil, "app"),
		"init and two":       pod([]string{"init"}, "app", "sidecar"),
		"volumes and mounts": withVolumes,
		"no label value":     func() *corev1.Pod { p := pod(nil, "app"); p.Labels[meshlet.LabelMeshlet] = ""; return p }(),
		"volume already here": func() *corev1.Pod {
			p := pod(nil, "app")
			p.Spec.Volumes = []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			return p
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			ops, result, reason := Mutate(p)
			if result != ResultInjected || reason != "" {
				t.Fatalf("result %s %q, want injected", result, reason)
			}
			got := apply(t, p, ops)
			checkInjected(t, got)
			if p.Annotations["a/b~c"] != "" && got.Annotations["a/b~c"] != "kept" {
				t.Errorf("annotation a/b~c lost: %v", got.Annotations)
			}
			if len(got.Spec.Volumes) != len(p.Spec.Volumes)+boolInt(!hasVolume(p)) {
				t.Errorf("volumes %+v from %+v", got.Spec.Volumes, p.Spec.Volumes)
			}
			// Idempotent: nothing more to add, as on a re-invocation.
			again, result, _ := Mutate(got)
			if len(again) != 0 || result != ResultPresent {
				t.Errorf("second pass: %s %+v, want present and no operation", result, again)
			}
		})
	}
}

func mustOps(t *testing.T, p *corev1.Pod) []Operation {
	t.Helper()
	ops, _, _ := Mutate(p)
	return ops
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMutateReinvocation: another webhook adds a container after this
// one ran; the re-invocation mounts the folder there, and only there.
func TestMutateReinvocation(t *testing.T) {
	p := apply(t, pod(nil, "app"), mustOps(t, pod(nil, "app")))
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "late", Image: "proxy"})
	ops, result, _ := Mutate(p)
	if result != ResultInjected || len(ops) != 1 || ops[0].Path != "/spec/containers/1/volumeMounts" {
		t.Fatalf("re-invocation: %s %+v, want one mount for the new container", result, ops)
	}
	checkInjected(t, apply(t, p, ops))
}

func TestMutateLeavesTheUsersMeshlet(t *testing.T) {
	cases := map[string]struct {
		edit   func(*corev1.Pod)
		reason string
	}{
		"another volume at /meshlet": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "mine", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/meshlet/"}}
		}, `container "app" mounts volume "mine" at /meshlet/`},
		"a volume below /meshlet in an init container": {func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", VolumeMounts: []corev1.VolumeMount{{Name: "x", MountPath: "/meshlet/server"}}}}
		}, `container "init" mounts volume "x" at /meshlet/server`},
		"meshless-meshlet as a host path": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}}}
		}, `volume "meshless-meshlet" is not an emptyDir`},
		"a subPath": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: VolumeName, MountPath: "/meshlet", SubPath: "x"}}
		}, `container "app" mounts a subPath of "meshless-meshlet" at /meshlet`},
		"meshless-meshlet below /meshlet": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: VolumeName, MountPath: "/meshlet/a"}}
		}, `container "app" mounts "meshless-meshlet" at /meshlet/a, not /meshlet`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := pod(nil, "app")
			tc.edit(p)
			ops, result, reason := Mutate(p)
			if result != ResultSkipped || reason != tc.reason {
				t.Fatalf("got %s %q, want skipped %q", result, reason, tc.reason)
			}
			got := apply(t, p, ops)
			if got.Annotations[AnnotationMeshletDir] != AnnotationSkipped || got.Annotations[AnnotationReason] != tc.reason {
				t.Errorf("annotations %v", got.Annotations)
			}
			got.Annotations = nil
			a, _ := json.Marshal(got.Spec)
			b, _ := json.Marshal(p.Spec)
			if string(a) != string(b) {
				t.Errorf("spec changed:\n%s\nwas\n%s", a, b)
			}
			if again, _, _ := Mutate(apply(t, p, ops)); len(again) != 0 {
				t.Errorf("second pass: %+v", again)
			}
		})
	}
}

func TestMutateIgnoresOtherPods(t *testing.T) {
	p := pod(nil, "app")
	p.Labels = map[string]string{"app": "web", "meshless/meshlet-other": "x"}
	if ops, result, _ := Mutate(p); len(ops) != 0 || result != ResultIgnored {
		t.Errorf("pod without the label: %s %+v", result, ops)
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{"meshless.io/meshlet-dir": "meshless.io~1meshlet-dir", "a~/b": "a~0~1b", "plain": "plain"} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	ops := annotate(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a": "b"}}}, AnnotationInjected, "")
	if len(ops) != 1 || !strings.HasSuffix(ops[0].Path, "/meshless.io~1meshlet-dir") {
		t.Errorf("annotate: %+v", ops)
	}
}
