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
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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

// maxAnswer bounds a JSON answer of the API.
const maxAnswer = 16 << 20

// do sends in (JSON, unless nil) to method path and decodes a 2xx response into out (unless
// nil). A non-2xx response becomes an *apiStatusError carrying the API's one-line reason.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	raw, err := c.doRaw(ctx, method, path, in, maxAnswer)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// doRaw is do without the decoding: it returns the body of a 2xx answer (pcaps, or JSON the
// caller decodes itself), refusing one larger than limit bytes.
func (c *apiClient) doRaw(ctx context.Context, method, path string, in any, limit int64) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("controller API %s: %w (is the controller running?)", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, &apiStatusError{code: resp.StatusCode, msg: e.Error}
		}
		return nil, &apiStatusError{code: resp.StatusCode, msg: fmt.Sprintf("controller API %s %s: %s", method, path, resp.Status)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("controller API %s %s: read answer: %w", method, path, err)
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("controller API %s %s: answer larger than %d bytes", method, path, limit)
	}
	return raw, nil
}

// apiStatusError is a non-2xx answer of the REST API, kept with its status code so callers
// can tell "this controller does not have the route" (404) from a refusal.
type apiStatusError struct {
	code int
	msg  string
}

func (e *apiStatusError) Error() string { return e.msg }

// isNotFound reports whether err is the API's 404.
func isNotFound(err error) bool {
	var se *apiStatusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
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

// getList GETs the list at path and prints it as a table (table writes header and rows) or
// as JSON/YAML, an empty list as []; verb names the command in errors.
func getList[T any](cmd *cobra.Command, g *globals, output, verb, path string, table func(tw *tabwriter.Writer, list []T)) error {
	if err := checkFormat(output, outputFormats...); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	var list []T
	if err := c.do(cmd.Context(), "GET", path, nil, &list); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if list == nil {
		list = []T{}
	}
	return printOut(cmd.OutOrStdout(), output, list, func(tw *tabwriter.Writer) { table(tw, list) })
}
