// Command sandboxd-agent is sandboxd's in-sandbox agent: the main process of every
// sandbox (under the engine's init), running as the sandbox's user. It serves the frames
// of package agentproto on its standard input and output, which sandboxd reaches through
// one attach to the container, and runs the commands they ask for (package agent).
//
// It is built static (CGO_ENABLED=0 go build ./cmd/sandboxd-agent) and bind-mounted,
// read-only, into each sandbox by sandboxd (docker.agent): the sandbox's image is not
// changed. When the channel ends or breaks the protocol, it kills its commands and idles:
// the sandbox lives on and sandboxd runs commands through the engine's exec instead.
//
// The image's own entrypoint and command, which sandboxd passes in
// agentproto.CommandVar, run as a child of the agent for the sandbox's life (see
// agent.StartChild); SIGTERM reaches them, and the agent ends when they have.
//
// With agentproto.ChannelArg it is one host's channel instead, started by that host
// through the engine's exec (sandboxd's replicas each have their own): it exits when
// the channel ends, and runs no image command.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agentproto"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	channel := len(os.Args) == 2 && os.Args[1] == agentproto.ChannelArg
	command := os.Getenv(agentproto.CommandVar)
	_ = os.Unsetenv(agentproto.CommandVar)
	env := os.Environ()
	var child *agent.Child
	if command != "" && !channel {
		var argv []string
		err := json.Unmarshal([]byte(command), &argv)
		if err == nil {
			child, err = agent.StartChild(argv, env, os.Stderr)
		}
		if err != nil {
			// The sandbox serves its commands all the same.
			fmt.Fprintf(os.Stderr, "sandboxd-agent: the image's command did not start: %v\n", err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- agent.Serve(os.Stdin, os.Stdout, agent.Config{Env: env}) }()
	select {
	case <-stop:
	case <-done:
		if channel {
			return // a host's channel of its own, started through the engine's exec
		}
		// The input ended (a container without an open stdin) or went out of step
		// with the host: idle until the sandbox stops, which the agent's end would
		// bring about at once.
		<-stop
	}
	if child != nil {
		child.Stop()
	}
}
