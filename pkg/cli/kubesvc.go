package cli

import (
	"fmt"
	"log/slog"

	"github.com/cni-genie/cni-genie/pkg/service/kubesvc"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// serviceControllerCommand runs the kubesvc controller: Kubernetes
// Services annotated genie.cni.io/network get a VIP in that VPC. It needs
// a Kubernetes client (--kubeconfig, or the in-cluster account) and the
// datastore the agents use; one instance per cluster is enough and a
// restart re-lists everything, so it runs as a small Deployment (or by
// hand) with rights to patch Services and to write VPC services, rights
// the node agents deliberately do not have.
func serviceControllerCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "controller",
		Short: "Give Kubernetes Services annotated " + kubesvc.AnnotationNetwork + " a VIP in that VPC (runs until interrupted)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := kubestore.RESTConfig(g.kubeconfig)
			if err != nil {
				return err
			}
			kc, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("service controller: kubernetes client: %w", err)
			}
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("service controller: dynamic client: %w", err)
			}
			st, _, err := g.serviceStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			ctl := &kubesvc.Controller{Kube: kc, Dyn: dyn, Store: st,
				Log: slog.New(slog.NewTextHandler(g.errOut, nil)).With("component", "service-controller")}
			if err := ctl.Run(c.Context()); err != nil && c.Context().Err() == nil {
				return fmt.Errorf("service controller: %w", err)
			}
			return nil
		},
	}
}
