package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/cni-genie/cni-genie/pkg/service/kubesvc"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// ServiceControllerElection is the leader election of the service
// controllers (the Lease "genie-service-controller" in the kubernetes
// datastore): replicas stand by while one mirrors.
const ServiceControllerElection = "service-controller"

// serviceControllerCommand runs the kubesvc controller: Kubernetes
// Services annotated genie.cni.io/network get a VIP in that VPC. It needs
// a Kubernetes client (--kubeconfig, or the in-cluster account) and the
// datastore the agents use. Replicas elect a leader through the store
// (--leader-elect, on by default), so the chart runs it as a Deployment of
// two: only the leader writes, and a restart re-lists everything. Its
// rights (the ClusterRole genie-service-controller of
// deploy/policy/rbac.yaml: patch Services, read NADs, create VPC services)
// are ones the node agents deliberately do not have.
func serviceControllerCommand(g *globals) *cobra.Command {
	var (
		elect bool
		id    string
	)
	c := &cobra.Command{
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
			log := slog.New(slog.NewTextHandler(g.errOut, nil)).With("component", "service-controller")
			ctl := &kubesvc.Controller{Kube: kc, Dyn: dyn, Store: st, Log: log}
			if !elect {
				if err := ctl.Run(c.Context()); err != nil && c.Context().Err() == nil {
					return fmt.Errorf("service controller: %w", err)
				}
				return nil
			}
			le, ok := st.(store.LeaderElector)
			if !ok {
				return fmt.Errorf("service controller: the %s datastore cannot elect a leader (use --leader-elect=false)", g.datastore)
			}
			if id == "" {
				id, _ = os.Hostname()
			}
			err = le.Lead(c.Context(), ServiceControllerElection, id, func(ctx context.Context) {
				log.Info("service controller: leading", "id", id)
				if err := ctl.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("service controller: stopped", "err", err)
				}
			})
			if err != nil && c.Context().Err() == nil {
				return fmt.Errorf("service controller: %w", err)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&elect, "leader-elect", true, "run only while holding the "+ServiceControllerElection+" leadership (replicas stand by)")
	c.Flags().StringVar(&id, "id", os.Getenv("POD_NAME"), "this replica's identity in the election (default $POD_NAME, else the host name)")
	return c
}
