// Command provisioner is the test cluster's volume provisioner (scripts/kube/up.sh starts
// it): every PersistentVolumeClaim of a StorageClass whose provisioner is sandboxd.dev/local
// gets a local PersistentVolume, a fresh folder under --dir on the one node, bound to it;
// when the claim is deleted, the volume and its folder go too. A local volume (unlike
// hostPath) takes the pod's fsGroup, so a non-root sandbox can write its workspace.
//
// It is a test fixture, not part of sandboxd: a real cluster has its own provisioner.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// name is the provisioner's name in StorageClasses and in its volumes' annotation.
const name = "sandboxd.dev/local"

const annProvisionedBy = "pv.kubernetes.io/provisioned-by"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of a user allowed to manage PVs and read PVCs")
	dir := flag.String("dir", "", "folder the volumes' folders are made in")
	node := flag.String("node", "localhost", "the node the volumes are on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *dir, *node); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, kubeconfig, dir, node string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return errors.New("--dir must be an absolute folder")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p := provisioner{cs: cs, dir: dir, node: node}
	for {
		if err := p.pass(ctx); err != nil {
			log.Print(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type provisioner struct {
	cs        kubernetes.Interface
	dir, node string
}

// pass provisions every pending claim of our classes and deletes every released volume.
func (p provisioner) pass(ctx context.Context) error {
	classes, err := p.cs.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, c := range classes.Items {
		ours[c.Name] = c.Provisioner == name
	}
	claims, err := p.cs.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range claims.Items {
		if c.Status.Phase == corev1.ClaimPending && c.Spec.VolumeName == "" && c.DeletionTimestamp == nil &&
			c.Spec.StorageClassName != nil && ours[*c.Spec.StorageClassName] {
			errs = append(errs, p.provision(ctx, c))
		}
	}
	volumes, err := p.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, v := range volumes.Items {
		if v.Annotations[annProvisionedBy] == name && v.Status.Phase == corev1.VolumeReleased {
			errs = append(errs, p.remove(ctx, v))
		}
	}
	return errors.Join(errs...)
}

func (p provisioner) provision(ctx context.Context, c corev1.PersistentVolumeClaim) error {
	pvName := "pvc-" + string(c.UID)
	folder := filepath.Join(p.dir, pvName)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return err
	}
	size := c.Spec.Resources.Requests[corev1.ResourceStorage]
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{annProvisionedBy: name}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              *c.Spec.StorageClassName,
			VolumeMode:                    c.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: folder}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{p.node},
				}}}},
			}},
		},
	}
	_, err := p.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("provision %s/%s: %w", c.Namespace, c.Name, err)
	}
	return nil
}

func (p provisioner) remove(ctx context.Context, v corev1.PersistentVolume) error {
	if v.Spec.Local != nil && filepath.Dir(v.Spec.Local.Path) == p.dir {
		if err := os.RemoveAll(v.Spec.Local.Path); err != nil {
			return err
		}
	}
	err := p.cs.CoreV1().PersistentVolumes().Delete(ctx, v.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", v.Name, err)
	}
	return nil
}
