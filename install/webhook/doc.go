// Package webhook is the mutating admission webhook that gives every pod
// of a Meshlet its Meshless folder, /meshlet, with nothing in the pod
// spec: an emptyDir volume VolumeName mounted at MountPath in every
// container and init container. The signer serves it (install/signer,
// ServeWebhook) over HTTPS with a certificate of the Meshless CA.
//
//	h, err := webhook.NewHandler(webhook.Options{Logger: log, Registerer: reg})
//	mux := http.NewServeMux()
//	mux.Handle(webhook.Path, h) // POST AdmissionReview v1 -> AdmissionReview with a JSONPatch
//	srv := &http.Server{Handler: mux, TLSConfig: tlsConfig}
//	err = srv.ServeTLS(ln, "", "")
//
//	ops, result, reason := webhook.Mutate(pod) // the decision alone
//
// # Why an emptyDir
//
// The kubelet keeps the emptyDir of a pod of UID u at
// /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/meshless-meshlet:
// that is the daemon's --meshlet-dir layout in
// install/kubernetes/meshless.yaml (package daemon/meshletdir). The
// pod's apps see the folder at /meshlet and create
// /meshlet/server/<service> there; meshlessd (root, with the kubelet's
// pods folder mounted) finds the same folder by the pod's UID. It lives
// and dies with the pod: nothing on the node to create or clean up, no
// host path in the pod, and nothing for the pod's user to write.
//
// # What is changed
//
// Only pods created with the label meshlet.LabelMeshlet (the
// MutatingWebhookConfiguration's objectSelector; Mutate checks again).
// Such a pod gets the volume (unless it has it), a mount in each
// container and init container that has none at /meshlet, and the
// annotation AnnotationMeshletDir: AnnotationInjected. A pod that mounts
// another volume at or below /meshlet, or whose VolumeName is not an
// emptyDir, is the user's choice: it is left as it is and annotated
// AnnotationSkipped, with AnnotationReason. Mutate is idempotent, so the
// configuration's reinvocationPolicy IfNeeded only adds the mount to
// containers that a later webhook added.
//
// # Input
//
// A review is read only by POST with Content-Type application/json, up
// to MaxBodyBytes, decoded case-sensitively with duplicate fields refused
// (see decodeReview). A request the webhook cannot read gets HTTP 400
// and the API server applies the failurePolicy; the webhook itself never
// denies a pod it could read. FuzzAdmissionReview feeds the handler
// arbitrary bodies: no panic, and every patch it answers applies to the
// pod and is idempotent.
package webhook
