package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// Subsystem is one long-running part of the controller. Run blocks until ctx ends and returns
// nil then; an error (or an early return) stops the whole controller.
type Subsystem struct {
	Name string
	Run  func(ctx context.Context) error
}

// Supervise runs every subsystem until ctx ends or one of them stops, then cancels the rest
// and waits for all. It returns the first error.
func Supervise(ctx context.Context, log *slog.Logger, subs ...Subsystem) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Run(ctx)
			if err == nil && ctx.Err() == nil {
				err = fmt.Errorf("%s stopped unexpectedly", s.Name)
			}
			if err != nil {
				log.Error("subsystem failed", "subsystem", s.Name, "err", err)
				once.Do(func() { first = fmt.Errorf("%s: %w", s.Name, err) })
			} else {
				log.Debug("subsystem stopped", "subsystem", s.Name)
			}
			cancel()
		}()
	}
	wg.Wait()
	return first
}
