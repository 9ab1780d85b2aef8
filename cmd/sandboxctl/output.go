package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// writeSession prints one session as a two-column table, result first when known.
func writeSession(w io.Writer, s client.Session, result string) error {
	t := newTable(w)
	if result != "" {
		fmt.Fprintf(t, "RESULT\t%s\n", result)
	}
	fmt.Fprintf(t, "CHAT\t%s\n", s.ChatID)
	fmt.Fprintf(t, "SESSION\t%s\n", s.SessionID)
	fmt.Fprintf(t, "CONTAINER\t%s\n", s.ContainerID)
	fmt.Fprintf(t, "STATUS\t%s\n", status(s))
	fmt.Fprintf(t, "AGENT\t%s\n", orDash(s.AgentID))
	fmt.Fprintf(t, "VOLUME\t%s\n", orDash(s.VolumeHostPath))
	fmt.Fprintf(t, "CREATED\t%s\n", s.CreatedAt.Format(time.RFC3339))
	fmt.Fprintf(t, "EXPIRES\t%s\n", s.ExpiresAt.Format(time.RFC3339))
	return t.Flush()
}

func writeDelete(w io.Writer, r client.DeleteResult) error {
	t := newTable(w)
	fmt.Fprintf(t, "RESULT\t%s\n", r.Result)
	fmt.Fprintf(t, "CHAT\t%s\n", r.ChatID)
	fmt.Fprintf(t, "SESSION\t%s\n", orDash(r.SessionID))
	fmt.Fprintf(t, "CONTAINER\t%s\n", orDash(r.ContainerID))
	return t.Flush()
}

func writeWorkspace(w io.Writer, r client.WorkspaceResult) error {
	t := newTable(w)
	fmt.Fprintf(t, "WORKSPACE\t%s\n", r.Result)
	fmt.Fprintf(t, "FOLDER\t%s\n", orDash(r.Path))
	return t.Flush()
}

// writeList prints sessions one a line; container ids are shortened as docker ps does.
func writeList(w io.Writer, sessions []client.Session) error {
	t := newTable(w)
	fmt.Fprintln(t, "CHAT\tSESSION\tCONTAINER\tSTATUS\tAGENT\tEXPIRES")
	for _, s := range sessions {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ChatID, s.SessionID, short(s.ContainerID),
			status(s), orDash(s.AgentID), s.ExpiresAt.Format(time.RFC3339))
	}
	return t.Flush()
}

// writeFiles prints workspace entries one a line, as ls -l does.
func writeFiles(w io.Writer, files []client.FileInfo) error {
	t := newTable(w)
	fmt.Fprintln(t, "MODE\tSIZE\tMODIFIED\tPATH")
	for _, f := range files {
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\n", f.Mode, f.Size, f.ModTime.Format(time.RFC3339), f.Path)
	}
	return t.Flush()
}

func status(s client.Session) string {
	if s.Expired {
		return s.Status + " (expired)"
	}
	return s.Status
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
