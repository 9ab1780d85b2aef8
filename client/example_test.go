package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/client"
)

// connect makes the client the examples use, from the environment.
func connect() *client.Client {
	c, err := client.New(os.Getenv("SANDBOXD_URL"), os.Getenv("SANDBOXD_TOKEN"), nil)
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// A chat's sandbox: made on the first call, the same one on the next.
func ExampleClient_Create() {
	ctx := context.Background()
	c := connect()
	chat := uuid.NewString()
	defer c.Delete(ctx, chat)

	s, result, err := c.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(result, s.Status, s.ChatID == chat)
	again, result, err := c.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(result, again.SessionID == s.SessionID)
	// Output:
	// created RUNNING true
	// reused true
}

// Run a command and read its output once it ends.
func ExampleClient_Exec() {
	ctx := context.Background()
	c := connect()
	chat := uuid.NewString()
	if _, _, err := c.Create(ctx, chat, client.CreateBody{}); err != nil {
		log.Fatal(err)
	}
	defer c.Delete(ctx, chat)

	res, err := c.Exec(ctx, chat, client.ExecBody{
		Cmd:   []string{"sh", "-c", "read name; echo hello $name; exit 3"},
		Stdin: "world\n",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d: %s", res.ExitCode, res.Stdout)
	// Output: exit 3: hello world
}

// Stream a command's output as it comes.
func ExampleClient_ExecStream() {
	ctx := context.Background()
	c := connect()
	chat := uuid.NewString()
	if _, _, err := c.Create(ctx, chat, client.CreateBody{}); err != nil {
		log.Fatal(err)
	}
	defer c.Delete(ctx, chat)

	res, err := c.ExecStream(ctx, chat, client.ExecBody{
		Cmd: []string{"sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done"},
	}, os.Stdout, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit", res.ExitCode)
	// Output:
	// line 1
	// line 2
	// line 3
	// exit 0
}

// Move files in and out of the workspace (streamed both ways) and list a folder.
func ExampleClient_Upload() {
	ctx := context.Background()
	c := connect()
	chat := uuid.NewString()
	if _, _, err := c.Create(ctx, chat, client.CreateBody{}); err != nil {
		log.Fatal(err)
	}
	defer c.Delete(ctx, chat)

	if _, err := c.Upload(ctx, chat, "src/main.py", strings.NewReader("print('hi')\n")); err != nil {
		log.Fatal(err)
	}
	files, err := c.ListFiles(ctx, chat, "src")
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range files {
		fmt.Println(f.Path, f.Size)
	}
	var back bytes.Buffer
	if _, err := c.Download(ctx, chat, "src/main.py", &back); err != nil {
		log.Fatal(err)
	}
	fmt.Print(back.String())
	// Output:
	// src/main.py 12
	// print('hi')
}

// Push a sandbox's expiry further.
func ExampleClient_Keepalive() {
	ctx := context.Background()
	c := connect()
	chat := uuid.NewString()
	if _, _, err := c.Create(ctx, chat, client.CreateBody{}); err != nil {
		log.Fatal(err)
	}
	defer c.Delete(ctx, chat)

	s, err := c.Keepalive(ctx, chat, 2*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(time.Until(s.ExpiresAt) > 119*time.Minute)
	// Output: true
}

// Errors match this package's sentinels, one per error code of the server.
func ExampleError() {
	ctx := context.Background()
	c := connect()

	_, err := c.Exec(ctx, uuid.NewString(), client.ExecBody{Cmd: []string{"true"}})
	var problem *client.Error
	if errors.As(err, &problem) {
		fmt.Println(problem.Status, problem.Code, errors.Is(err, client.ErrNotFound))
	}
	// Output: 404 not_found true
}
