package main

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// remote is a file in a chat's workspace, written <chat>:<path>.
type remote struct{ chat, path string }

// parseRemote reports whether arg names a file in a chat's workspace: what comes
// before the first colon is a chat id.
func parseRemote(arg string) (remote, bool) {
	chat, p, ok := strings.Cut(arg, ":")
	if !ok {
		return remote{}, false
	}
	if _, err := sandbox.ParseChatID(chat); err != nil {
		return remote{}, false
	}
	return remote{chat: chat, path: p}, true
}

func (c *cli) cpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cp <local> <chat>:<path> | cp <chat>:<path> <local>",
		Short: "Copy a file into or out of the chat's workspace (- is stdin or stdout)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, srcRemote := parseRemote(args[0])
			dst, dstRemote := parseRemote(args[1])
			if srcRemote == dstRemote {
				return errors.New("cp: exactly one of the two must be <chat>:<path>")
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				if dstRemote {
					return c.upload(ctx, api, args[0], dst)
				}
				return c.download(ctx, api, src, args[1])
			})
		},
	}
}

func (c *cli) upload(ctx context.Context, api *client.Client, local string, dst remote) error {
	in := c.stdin
	if local != "-" {
		f, err := os.Open(local)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if dst.path == "" || strings.HasSuffix(dst.path, "/") {
		if local == "-" {
			return errors.New("cp: name the file to write from stdin")
		}
		dst.path += filepath.Base(local)
	}
	_, err := api.Upload(ctx, dst.chat, dst.path, in)
	return err
}

// download writes to a temporary file beside local and renames it into place, so that
// a failed download leaves the local file as it was.
func (c *cli) download(ctx context.Context, api *client.Client, src remote, local string) error {
	if local == "-" {
		_, err := api.Download(ctx, src.chat, src.path, c.stdout)
		return err
	}
	if st, err := os.Stat(local); err == nil && st.IsDir() {
		local = filepath.Join(local, path.Base(src.path))
	}
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := api.Download(ctx, src.chat, src.path, tmp); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

func (c *cli) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls <chat> [path]",
		Short: "List a folder of the chat's workspace",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := ""
			if len(args) == 2 {
				dir = args[1]
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				items, err := api.ListFiles(ctx, args[0], dir)
				if err != nil {
					return err
				}
				if c.json {
					if items == nil {
						items = []client.FileInfo{}
					}
					return writeJSON(c.stdout, items)
				}
				return writeFiles(c.stdout, items)
			})
		},
	}
}
