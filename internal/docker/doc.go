// Package docker runs sandboxes as hardened containers on a Docker engine. Its Runtime is
// the lifecycle's Runtime, Admitter and Inventory: it makes, stops and removes containers,
// checks create requests (agent profile, workspace folder) before anything happens, and
// lists the containers this instance made so the reconciler can repair crashes.
//
// Every container is the translation of its agent's profile (package profile), chosen by
// configuration, never by the client: its own image, limits, network and user, with all
// capabilities dropped, no-new-privileges, a read-only root, an init process and the
// chat's workspace folder as its only host mount.
//
// # How commands run
//
// With an agent binary (Config.AgentPath), every sandbox runs the in-sandbox agent
// (cmd/sandboxd-agent) as its main process, and commands go to it over one attach per
// sandbox (agent.go): the agent starts, streams and kills them itself. The engine's exec
// below is the fallback for sandboxes without a live agent, counted.
//
// # How an exec is killed
//
// On the engine's path, the Engine API cannot signal an exec process, so Exec runs every command through
// package execwrap's wrapper, which reports the command's pid and start time, and kills
// it, when its context ends, with execwrap's kill script in a second exec in the same
// sandbox, as the same user (execwrap's package doc says how and why). The engine starts
// each exec process as the leader of a session and process group of its own (runc calls
// setsid for it; the wrapper checks).
//
// # The warm pool
//
// A profile with Pool.Min > 0 keeps that many sandboxes created and started ahead of
// demand. A pooled container is made exactly as a cold one (same config, limits, user and
// hardening) except for its name (sandboxd-pool-<profile>-<owner>-<rand>), its labels
// (LabelManagedBy, LabelInstance, LabelPool, LabelPoolOwner; no chat, session, agent or
// expiry) and its workspace, a fresh folder <root>/.pool/<owner>-<rand>.
//
// Create claims one when the chat's workspace is its derived folder <root>/<chat> and that
// folder does not exist yet: it renames the pooled folder to <root>/<chat> (the bind mount
// holds the directory, not its name, so the sandbox's /workspace is the chat's folder from
// then on) and the container to ContainerName(chat, session). Labels cannot change after
// creation, so a claimed container's identity is its name: Managed reads chat and session
// from it, and does not list unclaimed pool containers at all (the pool owns them, the
// reconciler never sees them). A crash between the claim and the registry's save leaves a
// container that Managed reports with its chat and no record: the reconciler removes it.
//
// Pool containers and folders carry the id of the pool that made them (owner): each live
// pool holds a lock on <root>/.pool/<owner>.lock, so that leftovers of a pool that died (a
// previous run) are told apart from the pools of other processes sharing the engine,
// instance and volume root (replicas), and only the former are removed at start-up.
package docker
