package kube

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"

	"github.com/meshless/meshless/daemon/meshlet"
)

// MeshletGroupVersion is the Meshlet resource's API group and version.
var MeshletGroupVersion = schema.GroupVersion{Group: meshlet.Group, Version: meshlet.Version}

// MeshletObject is a Meshlet as the apiserver serves it. The source decodes
// no more than that: a hand-written type over a two-type scheme, not a
// generated clientset or a dynamic client (see client.go).
type MeshletObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the spec as the apiserver sent it. It is decoded into a
	// meshlet.Spec object by object when the model is built, so that one
	// Meshlet the Go type cannot read is left out alone instead of failing
	// the decoding of the whole list or watch.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Status is what meshlessd made of the Meshlet.
	Status MeshletStatus `json:"status,omitzero"`
}

// MeshletStatus is a Meshlet's status: its Accepted condition.
type MeshletStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions holds ConditionAccepted.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MeshletList is a list of Meshlets.
type MeshletList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the Meshlets.
	Items []MeshletObject `json:"items"`
}

// The Accepted condition: True when the Meshlet is in the daemons' model,
// False with the reason and what to fix when it is left out.
const (
	ConditionAccepted = "Accepted"
	// ReasonValid is the reason of an accepted Meshlet.
	ReasonValid = "Valid"
	// ReasonInvalid is the reason of a Meshlet left out; the message says
	// which fields are wrong and how.
	ReasonInvalid = "Invalid"
)

// DeepCopyObject implements runtime.Object.
func (in *MeshletObject) DeepCopyObject() runtime.Object { return in.DeepCopy() }

// DeepCopy returns a deep copy of in.
func (in *MeshletObject) DeepCopy() *MeshletObject {
	if in == nil {
		return nil
	}
	out := &MeshletObject{TypeMeta: in.TypeMeta, Spec: bytes.Clone(in.Spec)}
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Status.ObservedGeneration = in.Status.ObservedGeneration
	for _, c := range in.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, *c.DeepCopy())
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *MeshletList) DeepCopyObject() runtime.Object {
	if in == nil {
		return nil
	}
	out := &MeshletList{TypeMeta: in.TypeMeta}
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range in.Items {
		out.Items = append(out.Items, *in.Items[i].DeepCopy())
	}
	return out
}

// addMeshletTypes registers the two types, and the list and watch options
// of their group, with s.
func addMeshletTypes(s *runtime.Scheme) error {
	s.AddKnownTypeWithName(MeshletGroupVersion.WithKind(meshlet.Kind), &MeshletObject{})
	s.AddKnownTypeWithName(MeshletGroupVersion.WithKind(meshlet.ListKind), &MeshletList{})
	metav1.AddToGroupVersion(s, MeshletGroupVersion)
	return nil
}

// trimMeshlet drops what nobody reads (managed fields above all, which can
// outweigh the spec).
func trimMeshlet(obj any) (any, error) {
	m, ok := obj.(*MeshletObject)
	if !ok {
		return obj, nil
	}
	meta := metav1ObjectMeta(m.ObjectMeta)
	meta.Generation, meta.CreationTimestamp = m.Generation, m.CreationTimestamp
	return &MeshletObject{TypeMeta: m.TypeMeta, ObjectMeta: meta, Spec: m.Spec, Status: m.Status}, nil
}

// meshletResult is what became of one Meshlet object: in the model when
// errs is empty, left out for errs otherwise.
type meshletResult struct {
	obj  *MeshletObject
	errs []string
}

// translateMeshlets puts the valid Meshlets in the model and records a
// result per object. Rules: meshlet.Validate (the CRD's schema rejects
// most of it first) on the spec decoded strictly (an unknown field is an
// error, as the schema's pruning would have made it). Clashes (two
// Meshlets of a namespace serving one service name) go to the Meshlet in
// use, so that a new one never pushes out one that works: first the one
// whose status says Accepted for its current generation, then for an
// older one, then the older Meshlet (creation time, to the second), then
// namespace and name. Every daemon reads the same objects, status
// included, so all decide alike. A Meshlet left out gives a warning with
// what to fix; the objects' status says the same (see status.go).
func (t *translation) translateMeshlets(objs []*MeshletObject) {
	objs = slices.DeleteFunc(slices.Clone(objs), func(o *MeshletObject) bool { return o == nil })
	slices.SortFunc(objs, func(a, b *MeshletObject) int {
		return cmp.Or(cmp.Compare(incumbency(a), incumbency(b)),
			a.CreationTimestamp.Compare(b.CreationTimestamp.Time),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	results := make([]meshletResult, len(objs))
	var decoded []meshlet.Meshlet
	var at []int // decoded[i] is objs[at[i]]
	for i, o := range objs {
		results[i].obj = o
		spec, err := decodeSpec(o.Spec)
		if err != nil {
			results[i].errs = []string{err.Error()}
			continue
		}
		decoded = append(decoded, meshlet.Meshlet{Namespace: o.Namespace, Name: o.Name, Spec: spec})
		at = append(at, i)
	}
	ok, rejected := meshlet.Select(decoded)
	for _, r := range rejected {
		res := &results[at[r.Index]]
		for _, fe := range r.Errs {
			res.errs = append(res.errs, apiPath(fe))
		}
	}
	for _, r := range results {
		if len(r.errs) > 0 {
			t.warnf("meshlet %s/%s left out: %s", r.obj.Namespace, r.obj.Name, strings.Join(r.errs, "; "))
		}
	}
	slices.SortFunc(ok, func(a, b meshlet.Meshlet) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	t.model.Meshlets = ok
	t.meshlets = results
}

// incumbency ranks a Meshlet by how much it is in use: 0 accepted for its
// generation, 1 accepted for an earlier one, 2 not accepted.
func incumbency(o *MeshletObject) int {
	c := meta.FindStatusCondition(o.Status.Conditions, ConditionAccepted)
	switch {
	case c == nil || c.Status != metav1.ConditionTrue:
		return 2
	case c.ObservedGeneration == o.Generation:
		return 0
	}
	return 1
}

// decodeSpec reads a Meshlet's spec as the apiserver does: field names are
// case-sensitive (encoding/json would take "maxconn" for maxConn, which
// the apiserver prunes) and fields the Go type does not know are an error.
func decodeSpec(raw json.RawMessage) (meshlet.Spec, error) {
	var s meshlet.Spec
	if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
		return s, errors.New("spec: required")
	}
	strict, err := kjson.UnmarshalStrict(raw, &s, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err = errors.Join(append([]error{err}, strict...)...); err != nil {
		return s, fmt.Errorf("spec: %w", err)
	}
	return s, nil
}

// apiPath writes a field error as kubectl users know the path: the name
// and namespace are under metadata.
func apiPath(fe meshlet.FieldError) string {
	if fe.Path == "name" || fe.Path == "namespace" {
		fe.Path = "metadata." + fe.Path
	}
	return fe.Error()
}
