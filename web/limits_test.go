package web_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/web"
)

// limitServer serves web.Limit with a short body deadline: POST /echo reads its body,
// GET /ws hijacks the connection like a WebSocket upgrade and echoes one byte that the
// client sends after the body deadline.
func limitServer(t *testing.T) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	r := gin.New()
	r.Use(web.Limit(web.Limits{BodyTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4096}))
	r.POST("/echo", web.Handle(log, func(c *gin.Context) error {
		var v map[string]any
		if err := web.DecodeJSON(c, &v, 0); err != nil {
			return err
		}
		c.JSON(http.StatusOK, v)
		return nil
	}))
	r.GET("/ws", func(c *gin.Context) {
		conn, rw, err := http.NewResponseController(c.Writer).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		b, err := rw.ReadByte()
		if err != nil {
			fmt.Fprintf(rw, "read failed: %v", err)
		} else {
			fmt.Fprintf(rw, "echo %c", b)
		}
		_ = rw.Flush()
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestLimitCutsOffSlowBodiesOnly(t *testing.T) {
	t.Parallel()
	addr := limitServer(t)

	// A normal request passes.
	resp, err := http.Post("http://"+addr+"/echo", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("normal request: %d", resp.StatusCode)
	}

	// A body trickling in is answered body_timeout and the connection ends.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the slow body's connection was not ended: %v", err)
	}
	if !strings.Contains(string(got), "body_timeout") {
		t.Errorf("slow body answered %q", got)
	}

	// Oversized headers are answered in JSON.
	req, _ := http.NewRequest("POST", "http://"+addr+"/echo", strings.NewReader(`{}`))
	req.Header.Set("X-Padding", strings.Repeat("p", 5000))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(string(body), `"headers_too_large"`) {
		t.Errorf("oversized headers: %d %s", resp.StatusCode, body)
	}

	// A WebSocket upgrade is not bound by the body deadline.
	ws, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	fmt.Fprint(ws, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(ws)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // past the body deadline
	fmt.Fprint(ws, "x")
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	rest, _ := io.ReadAll(br)
	if string(rest) != "echo x" {
		t.Errorf("upgraded connection after the body deadline: %q", rest)
	}
}
