package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// serverConfig is what `strata serve --config FILE` starts, e.g.
//
//	{
//	  "mounts": [{"target": "home@latest", "mountpoint": "/srv/backup/home"},
//	             {"all": true, "mountpoint": "/srv/backup/all"}],
//	  "nbd": [{"listen": "unix:/run/strata-nbd.sock", "overlay": true}]
//	}
type serverConfig struct {
	Mounts []mountArgs    `json:"mounts"`
	NBD    []nbdServeArgs `json:"nbd"`
}

func loadServerConfig(path string) (*serverConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fail(exitUsage, "", "read server config: %v", err)
	}
	var c serverConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fail(exitUsage, `see 'strata serve --help': {"mounts": [{"target": "NAME[@REV]", "mountpoint": "DIR"}], "nbd": [{"listen": "unix:PATH"}]}`, "server config %s: %v", path, err)
	}
	for i := range c.Mounts {
		if !filepath.IsAbs(c.Mounts[i].Mountpoint) {
			return nil, fail(exitUsage, "", "server config %s: mountpoint %q must be absolute", path, c.Mounts[i].Mountpoint)
		}
	}
	return &c, nil
}

// start brings up the configured mounts and exports through the same
// operations clients use.
func (s *server) start(ctx context.Context, c *serverConfig) error {
	env := &opEnv{repo: s.repo, srv: s}
	for _, m := range c.Mounts {
		if _, err := opMount(ctx, env, m); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Target, m.Mountpoint, err)
		}
	}
	for _, n := range c.NBD {
		if _, err := opNBDServe(ctx, env, n); err != nil {
			return fmt.Errorf("nbd serve on %s: %w", n.Listen, err)
		}
	}
	return nil
}
