package policy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/dpi"
)

// TestEngineConcurrentSwap decides on many goroutines while the policy is replaced: every
// decision must come from one whole policy (allowed by the rule, or denied by protect mode
// once the rule is gone), never a mix. Run with -race.
func TestEngineConcurrentSwap(t *testing.T) {
	with := loadShop(t)
	without, _ := with.Delete(KindNetworkRule, "shop/web-to-cache")
	e := NewEngine(CompileOptions{})
	p, err := e.Update(with)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := p.GroupID("shop/web")
	cache, _ := p.GroupID("shop/cache")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := &Input{SrcGroups: []GroupID{web}, DstGroups: []GroupID{cache}, Port: 6379, Transport: dpi.TCP, App: "redis"}
			for i := 0; ctx.Err() == nil && i < 1_000_000; i++ {
				d := e.Decide(in)
				ok := (d.Verdict == Allow && d.RuleID == "shop/web-to-cache") ||
					(d.Verdict == Deny && d.Reason == ReasonMode && d.Group == "shop/cache")
				if !ok {
					errs <- d.String()
					return
				}
			}
		}()
	}
	for i := 0; ctx.Err() == nil && i < 200; i++ {
		s := with
		if i%2 == 0 {
			s = without
		}
		if _, err := e.Update(s); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("torn decision: %s", e)
	}
}
