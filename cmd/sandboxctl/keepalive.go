package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

func (c *cli) keepaliveCommand() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "keepalive <chat> --ttl <duration>",
		Short: "Keep the chat's sandbox alive for ttl from now (within the server's maximum lifetime)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return errors.New("keepalive: --ttl must be positive")
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				s, err := api.Keepalive(ctx, args[0], ttl)
				if err != nil {
					return err
				}
				return c.printSession(s, "")
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long from now the sandbox is to live, e.g. 10m")
	_ = cmd.MarkFlagRequired("ttl")
	return cmd
}
