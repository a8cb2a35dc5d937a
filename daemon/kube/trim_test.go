package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The enrollment of running pods needs phase, addresses, hostNetwork,
// deletion and the meshless.io/ annotations; nothing else is kept.
func TestTrimPodKeepsEnrollmentFields(t *testing.T) {
	now := metav1.Now()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "a", Namespace: "ns", UID: "u", DeletionTimestamp: &now,
			Annotations: map[string]string{"meshless.io/mesh": "disabled", "other/big": "x"},
		},
		Spec:   corev1.PodSpec{NodeName: "n1", HostNetwork: true, Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.2", PodIPs: []corev1.PodIP{{IP: "198.19.1.2"}}, HostIP: "198.18.0.1"},
	}
	o, err := trimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*corev1.Pod)
	if got.UID != "u" || got.DeletionTimestamp == nil || got.Spec.NodeName != "n1" || !got.Spec.HostNetwork ||
		got.Status.Phase != corev1.PodRunning || got.Status.PodIP != "198.19.1.2" || len(got.Status.PodIPs) != 1 {
		t.Errorf("trimmed pod lost fields: %+v", got)
	}
	if len(got.Annotations) != 1 || got.Annotations["meshless.io/mesh"] != "disabled" {
		t.Errorf("annotations %v, want only meshless.io/", got.Annotations)
	}
	if len(got.Spec.Containers) != 0 || got.Status.HostIP != "" {
		t.Error("trimmed pod keeps what nobody uses")
	}
}
