package api

import (
	"errors"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/internal/fileutil"
)

// AdminConfig is what the controller writes to DATA-DIR/admin.conf (mode 0600) and what CLI
// verbs read with --config: where the API is, which CA bundle to trust, the admin token.
type AdminConfig struct {
	Server   string `json:"server"`             // https URL of the REST API
	CAFile   string `json:"caFile"`             // PEM bundle of the meshguard roots
	Token    string `json:"token"`              // admin bearer token
	Identity string `json:"identity,omitempty"` // host:port of the identity gRPC service
	XDS      string `json:"xds,omitempty"`      // host:port of the config distribution gRPC service (mTLS)
	// CertFile and KeyFile, if set, authenticate with a client certificate (an SVID whose
	// SPIFFE ID an admin bound to a principal) instead of, or besides, Token.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// WriteAdminConfig writes c to path with mode 0600, replacing any previous file atomically.
func WriteAdminConfig(path string, c AdminConfig) error {
	raw, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(path, raw, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadAdminConfig reads and checks an admin config.
func LoadAdminConfig(path string) (AdminConfig, error) {
	var c AdminConfig
	raw, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("admin config: %w (start a controller, then pass --config DATA-DIR/admin.conf)", err)
	}
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return c, fmt.Errorf("admin config %s: %w", path, err)
	}
	if c.Server == "" || c.CAFile == "" || (c.Token == "" && c.CertFile == "") {
		return c, errors.New("admin config " + path + ": server, caFile and token (or certFile and keyFile) are required")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, errors.New("admin config " + path + ": certFile and keyFile go together")
	}
	return c, nil
}
