package webhook

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/meshlet"
)

// What the webhook adds and where.
const (
	// VolumeName is the emptyDir added to a pod of a Meshlet. The kubelet
	// keeps it at /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<VolumeName>,
	// the layout install/kubernetes/meshless.yaml gives meshlessd with
	// --meshlet-dir: renaming it breaks the daemon's side.
	VolumeName = "meshless-meshlet"
	// MountPath is where every container sees the folder.
	MountPath = "/meshlet"
)

// Annotations the webhook writes, so that `kubectl get pod -o yaml`
// says what it did.
const (
	// AnnotationMeshletDir is AnnotationInjected or AnnotationSkipped.
	AnnotationMeshletDir = "meshless.io/meshlet-dir"
	// AnnotationReason says why a pod was skipped.
	AnnotationReason = "meshless.io/meshlet-dir-reason"
	// AnnotationInjected: the pod has the volume and every container
	// mounts it at MountPath.
	AnnotationInjected = "injected"
	// AnnotationSkipped: the pod has a /meshlet of its own, left alone;
	// AnnotationReason names it.
	AnnotationSkipped = "skipped"
)

// Result is what Mutate did to a pod; the label of the metric
// meshless_webhook_reviews_total.
type Result string

// Results of Mutate, and of a review that failed.
const (
	// ResultInjected: the volume or a mount was added.
	ResultInjected Result = "injected"
	// ResultPresent: the pod already had the volume and every mount (a
	// re-invocation, or a spec that says it itself); at most the
	// annotation is added.
	ResultPresent Result = "present"
	// ResultSkipped: the pod mounts something else at /meshlet or below
	// it, or has a VolumeName that is not an emptyDir: only the
	// annotations are set.
	ResultSkipped Result = "skipped"
	// ResultIgnored: not a pod of a Meshlet, or not a pod creation.
	ResultIgnored Result = "ignored"
	// ResultError: the review could not be read.
	ResultError Result = "error"
)

// Operation is one RFC 6902 JSON Patch operation.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Mutate decides what a pod of a Meshlet (label meshlet.LabelMeshlet
// present) needs: the JSON Patch that adds the emptyDir VolumeName, a
// mount of it at MountPath in every container and init container that
// lacks one, and AnnotationMeshletDir. It is idempotent: applied to its
// own result it adds nothing, which is what a re-invocation (another
// webhook added a container since) relies on. A pod that mounts another
// volume at or below /meshlet, or whose VolumeName is not an emptyDir, is
// the user's: it only gets AnnotationSkipped and the reason, which
// Mutate returns too. A pod without the label gets nothing.
func Mutate(pod *corev1.Pod) ([]Operation, Result, string) {
	if _, ok := pod.Labels[meshlet.LabelMeshlet]; !ok {
		return nil, ResultIgnored, ""
	}
	if reason := conflict(pod); reason != "" {
		return annotate(pod, AnnotationSkipped, reason), ResultSkipped, reason
	}
	var ops []Operation
	if !hasVolume(pod) {
		ops = add(ops, "/spec/volumes", len(pod.Spec.Volumes), corev1.Volume{
			Name:         VolumeName,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
		})
	}
	for _, list := range []struct {
		field      string
		containers []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for i, c := range list.containers {
			if mountsMeshlet(c) {
				continue
			}
			ops = add(ops, "/spec/"+list.field+"/"+strconv.Itoa(i)+"/volumeMounts", len(c.VolumeMounts),
				corev1.VolumeMount{Name: VolumeName, MountPath: MountPath})
		}
	}
	result := ResultPresent
	if len(ops) > 0 {
		result = ResultInjected
	}
	return append(ops, annotate(pod, AnnotationInjected, "")...), result, ""
}

// conflict names what of the pod's own is at /meshlet, or returns "".
// The daemon finds the folder by the kubelet's path of the emptyDir
// VolumeName: another volume there (or below, shadowing server/ or
// client/) would make the apps and the daemon see different folders.
func conflict(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == VolumeName && v.EmptyDir == nil {
			return fmt.Sprintf("volume %q is not an emptyDir", VolumeName)
		}
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			p := path.Clean("/" + m.MountPath)
			if p != MountPath && !strings.HasPrefix(p, MountPath+"/") {
				continue
			}
			switch {
			case m.Name != VolumeName:
				return fmt.Sprintf("container %q mounts volume %q at %s", c.Name, m.Name, m.MountPath)
			case p != MountPath:
				return fmt.Sprintf("container %q mounts %q at %s, not %s", c.Name, VolumeName, m.MountPath, MountPath)
			case m.SubPath != "" || m.SubPathExpr != "":
				return fmt.Sprintf("container %q mounts a subPath of %q at %s", c.Name, VolumeName, MountPath)
			}
		}
	}
	return ""
}

// hasVolume reports whether the pod has VolumeName (an emptyDir: conflict
// ruled out the rest).
func hasVolume(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == VolumeName {
			return true
		}
	}
	return false
}

// mountsMeshlet reports whether c mounts something at MountPath (which,
// past conflict, is VolumeName).
func mountsMeshlet(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if path.Clean("/"+m.MountPath) == MountPath {
			return true
		}
	}
	return false
}

// add appends an operation adding value to the list at field, which has n
// elements: the list itself when it is absent (a JSON Patch cannot append
// to a missing array), else its end.
func add(ops []Operation, field string, n int, value any) []Operation {
	if n == 0 {
		return append(ops, Operation{Op: "add", Path: field, Value: []any{value}})
	}
	return append(ops, Operation{Op: "add", Path: field + "/-", Value: value})
}

// annotate returns the operations that make AnnotationMeshletDir value
// and AnnotationReason reason (absent when reason is ""), or none if they
// already are.
func annotate(pod *corev1.Pod, value, reason string) []Operation {
	want := map[string]string{AnnotationMeshletDir: value}
	if reason != "" {
		want[AnnotationReason] = reason
	}
	if len(pod.Annotations) == 0 {
		// Absent, or empty (which an encoder may leave out): the map
		// whole, since a JSON Patch cannot add to a missing object.
		return []Operation{{Op: "add", Path: "/metadata/annotations", Value: want}}
	}
	var ops []Operation
	for _, k := range []string{AnnotationMeshletDir, AnnotationReason} {
		cur, has := pod.Annotations[k]
		v, wanted := want[k]
		switch {
		case wanted && (!has || cur != v):
			// "add" replaces an existing member (RFC 6902, 4.1).
			ops = append(ops, Operation{Op: "add", Path: "/metadata/annotations/" + escape(k), Value: v})
		case !wanted && has:
			ops = append(ops, Operation{Op: "remove", Path: "/metadata/annotations/" + escape(k)})
		}
	}
	return ops
}

// escape makes s one reference token of a JSON Pointer (RFC 6901): "~"
// is "~0" and "/" is "~1".
func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
