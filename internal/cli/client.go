package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/api"
)

// adminConfigPath resolves --config, else $MESHGUARD_CONFIG, else ~/.meshguard/config.
func (g *globals) adminConfigPath() (string, error) {
	if g.configPath != "" {
		return g.configPath, nil
	}
	if p := os.Getenv("MESHGUARD_CONFIG"); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("no admin config: pass --config DATA-DIR/admin.conf or set $MESHGUARD_CONFIG")
	}
	return filepath.Join(home, ".meshguard", "config"), nil
}

// apiClient talks to the controller's REST API as admin. Every verb that manages the
// controller uses it: g.apiClient() then c.do(...).
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (g *globals) apiClient() (*apiClient, error) {
	path, err := g.adminConfigPath()
	if err != nil {
		return nil, err
	}
	cfg, err := api.LoadAdminConfig(path)
	if err != nil {
		return nil, err
	}
	pemBytes, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("admin config %s: caFile: %w", path, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("admin config %s: caFile %s holds no PEM certificate", path, cfg.CAFile)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin config %s: certFile/keyFile: %w", path, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	return &apiClient{
		base:  strings.TrimSuffix(cfg.Server, "/"),
		token: cfg.Token,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tlsCfg},
		},
	}, nil
}

// do sends in (JSON, unless nil) to method path and decodes a 2xx response into out (unless
// nil). A non-2xx response becomes an error carrying the API's one-line reason.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("controller API %s: %w (is the controller running?)", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("controller API %s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// postStatus POSTs req to path and prints the controller's one-line status; verb names the
// command in errors.
func (g *globals) postStatus(ctx context.Context, verb, path string, req any) error {
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	var resp api.Status
	if err := c.do(ctx, "POST", path, req, &resp); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	_, err = fmt.Fprintln(g.stdout, resp.Status)
	return err
}
