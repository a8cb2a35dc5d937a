// Command meshless-bench runs the benchmarks of `make bench` on the local
// lab and writes results.json, results.md, the charts and the daemon's CPU
// profile into --out. BENCH_QUICK=1 (or --quick) runs the short version.
//
//	meshless-bench --bin-dir bin --cni-bin-dir .cache/cni/bin --out bench/results
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/meshless/meshless/bench/run"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "meshless-bench:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var cfg run.Config
	var only string
	flag.StringVar(&cfg.BinDir, "bin-dir", "bin", "folder of meshlessd, meshless-cni and benchapp")
	flag.StringVar(&cfg.CNIBinDir, "cni-bin-dir", ".cache/cni/bin", "folder of the reference CNI plugins")
	flag.StringVar(&cfg.OutDir, "out", "bench/results", "output folder")
	flag.BoolVar(&cfg.Quick, "quick", os.Getenv("BENCH_QUICK") == "1", "short run (BENCH_QUICK=1)")
	flag.BoolVar(&cfg.Sockmap, "sockmap", os.Getenv("BENCH_SOCKMAP") == "1", "also measure meshless with meshlessd --sockmap (BENCH_SOCKMAP=1)")
	flag.StringVar(&cfg.Lab, "lab", os.Getenv("BENCH_LAB"), "main lab's name, so that runs can share the machine (BENCH_LAB; default "+run.DefaultLab+")")
	flag.StringVar(&only, "only", os.Getenv("BENCH_ONLY"), "comma-separated parts: rounds,profile,race,memory,cni (default all)")
	flag.Parse()
	if only != "" {
		cfg.Only = strings.Split(only, ",")
	}
	var err error
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return err
	}
	if cfg.CNIBinDir, err = filepath.Abs(cfg.CNIBinDir); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return err
	}
	cfg.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := run.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if _, err := res.Charts(cfg.OutDir); err != nil {
		res.Missing = append(res.Missing, "charts: "+err.Error())
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := res.Markdown()
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Println(md)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: partial results in %s", cfg.OutDir)
	}
	return nil
}
