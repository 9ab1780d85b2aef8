package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

func (c *cli) egressCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "egress <chat>",
		Short: "List the connections the egress proxy refused to the chat's sandbox, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				denials, err := api.EgressDenials(ctx, args[0])
				if err != nil {
					return err
				}
				if c.json {
					return writeJSON(c.stdout, denials)
				}
				t := newTable(c.stdout)
				fmt.Fprintln(t, "TIME\tDESTINATION\tREASON\tDETAIL")
				for _, d := range denials {
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", d.Time.Format(time.RFC3339), d.Destination, d.Reason, d.Detail)
				}
				return t.Flush()
			})
		},
	}
}
