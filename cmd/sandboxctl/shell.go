package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sandboxd/sandboxd/client"
)

func (c *cli) shellCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "shell <chat>",
		Short: "An interactive shell in the chat's sandbox; its exit code is sandboxctl's",
		Long: "shell opens a shell, as the sandbox's user, on a pseudo-terminal in the chat's sandbox. " +
			"When standard input is a terminal it is put in raw mode (every key goes to the shell, Ctrl-C included) " +
			"and its size changes are forwarded. Leaving (the connection closing) kills the shell and everything it started.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			opts := client.TerminalOptions{Stdin: c.stdin, Stdout: c.stdout}
			if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				fd := int(f.Fd())
				if w, h, err := term.GetSize(fd); err == nil {
					opts.Size = client.TermSize{Cols: w, Rows: h}
				}
				old, err := term.MakeRaw(fd)
				if err != nil {
					return fmt.Errorf("shell: raw mode: %w", err)
				}
				defer func() { _ = term.Restore(fd, old) }()
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer func() { signal.Stop(winch); close(winch) }()
				resize := make(chan client.TermSize, 1)
				opts.Resize = resize
				go func() {
					for range winch {
						w, h, err := term.GetSize(fd)
						if err != nil {
							continue
						}
						select { // only the latest size matters
						case <-resize:
						default:
						}
						resize <- client.TermSize{Cols: w, Rows: h}
					}
				}()
			}
			// No deadline: the session lasts as long as the shell.
			code, err := api.Terminal(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
}
