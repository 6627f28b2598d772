package daemon

import (
	"context"
	"fmt"
	"net/url"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
	"github.com/keyd-dev/keyd/publish/configmap"
	"github.com/keyd-dev/keyd/signer"
)

// openPublishers opens every publish[] target (a bad one stops the start,
// naming it) and makes its publisher of d.pub's documents.
func (d *daemon) openPublishers(ctx context.Context) error {
	var names []string
	for _, pc := range d.cfg.Publish {
		names = append(names, pc.Name)
	}
	d.met.PublishTargets(names, d.o.Now())
	for i, pc := range d.cfg.Publish {
		tg, err := openTarget(ctx, pc)
		if err != nil {
			return fmt.Errorf("publish[%d] (%s): %w", i, pc.Name, err)
		}
		d.closers = append(d.closers, func() { _ = tg.Close() })
		spec := publish.Spec{Name: pc.Name, KeySets: pc.KeySets, Files: pc.PublishFiles(), JWKSPath: pc.JWKSPath, Issuer: pc.Issuer,
			CacheControl: pc.CacheControl, MaxKeys: pc.MaxKeys, Algorithms: pc.Algorithms, Required: pc.Required, Interval: pc.Interval}
		src := publishSource{Publisher: d.pub, sg: d.sg}
		d.publishers = append(d.publishers, publish.New(spec, tg, src, d.o.Now, func(target string, err error) {
			d.met.PublishDone(target, d.o.Now(), err)
			if err != nil {
				d.log.Warn("publishing failed; retrying", "target", target, "err", err)
			}
		}))
	}
	return nil
}

func openTarget(ctx context.Context, pc config.Publish) (publish.Target, error) {
	u, err := url.Parse(pc.To)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "kubernetes" {
		return configmap.Open(pc.To, pc.Kubeconfig)
	}
	return blob.Open(ctx, pc.To)
}

// publisherActors run each publisher once the key sets are loaded.
func (d *daemon) publisherActors(loaded <-chan struct{}) []actor {
	var out []actor
	for _, p := range d.publishers {
		out = append(out, afterLoad(loaded, actor{name: "publisher " + p.Spec.Name, run: p.Run}))
	}
	return out
}

// publishSource is what publishers write: the JWKS publisher's documents
// and the signer's revocation lists.
type publishSource struct {
	*jwks.Publisher
	sg *signer.Signer
}

// RevocationList implements publish.RevocationSource: the whole list.
func (s publishSource) RevocationList(name string) (jwks.Document, error) {
	return s.sg.RevocationList(name, 0)
}
