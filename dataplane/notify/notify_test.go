package notify

import (
	"context"
	"testing"
)

func TestStartsOnce(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("a second Start was accepted: it would run a second receiver")
	}
}
