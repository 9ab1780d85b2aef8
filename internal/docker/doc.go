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
// # How an exec is killed
//
// The Engine API cannot signal an exec process, so Exec runs every command through a
// small wrapper (execWrapper) and kills it, when its context ends, with a second exec
// (killScript) in the same sandbox, as the same user. That works with a remote engine
// too; killing the host pid that ExecInspect reports would need sandboxd on the engine's
// host, with rights over the sandbox's processes.
//
// The engine starts each exec process as the leader of a session and process group of
// its own (runc calls setsid for it; the wrapper checks, and refuses to run the command
// if that ever stops being true, rather than kill someone else's group). So the wrapper's
// pid names the group and the session of everything the command starts. The wrapper
// reports it, with its start time, as the first line of its stdout, which Exec takes off
// before the caller sees any output: no pid file to clean up, nothing that fails when
// /tmp is full. Then it execs the command, which keeps that pid and start time.
//
// Each command also carries a token of its own in its environment (ExecTokenVar), which
// what it starts inherits, whatever session it moves to.
//
// killScript sends SIGKILL to the process group at once, then sweeps /proc for what is
// left of the session (processes that moved to a group of their own, as a shell with job
// control does) and for every process that carries the command's token (a daemon that
// called setsid keeps its environment), until none lives. The group and session are
// killed only if the pid still is the command's (same start time) or is gone: a pid the
// kernel gave to another command after this one ended is left alone (a session's pid is
// not reused while a process of the session lives). A process that starts a new session
// and clears its environment outlives the command; it dies with the sandbox.
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
