// Package kubetest gives tests the Kubernetes test cluster that scripts/kube/up.sh starts:
// its admin kubeconfig (SANDBOXD_TEST_KUBECONFIG), an admin client, and a namespace of
// each test's own. Without a cluster a test skips, except under CI=true, where a missing
// cluster is a failure.
package kubetest

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Kubeconfig is the test cluster's admin kubeconfig.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	path := os.Getenv("SANDBOXD_TEST_KUBECONFIG")
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("SANDBOXD_TEST_KUBECONFIG is not set: CI must start the test cluster (scripts/kube/up.sh)")
		}
		t.Skip("SANDBOXD_TEST_KUBECONFIG is not set: no test cluster (scripts/kube/up.sh starts one)")
	}
	return path
}

// Admin returns a client of the test cluster's admin.
func Admin(t testing.TB) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	rc.WarningHandler = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Namespace makes a namespace of the test's own, removed with its Pods at the test's end,
// and waits for its default service account (without which the API server admits no
// Pod).
func Namespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	name := "sbx-test-" + strings.ToLower(rand.Text()[:10])
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = cs.CoreV1().Pods(name).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: no default service account after 60 s (is the controller-manager running?)", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pods lists the names of the Pods of namespace ns that selector selects.
func Pods(t testing.TB, cs kubernetes.Interface, ns, selector string) []string {
	t.Helper()
	list, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(list.Items))
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names
}
