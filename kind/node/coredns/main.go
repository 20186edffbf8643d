// CoreDNS for the kind node image, with only the plugins kubeadm's Corefile
// uses (errors, health, ready, kubernetes, prometheus, forward, cache, loop,
// reload, loadbalance) plus log and hosts. The upstream binary compiles in
// every plugin, cloud DNS back ends included, and takes about four times as
// long to build on two cores; the DNS behaviour of these plugins is the same
// code. Built by kind/node/build.sh and tagged as the image kubeadm expects.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
