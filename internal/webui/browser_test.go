package webui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/sandboxdtest"
)

// -screenshots renders the list, a sandbox's page and the overview to PNGs under docs/
// (go test ./internal/webui -run TestOperatorPageInABrowser -args -screenshots).
var screenshots = flag.Bool("screenshots", false, "write the page's screenshots to docs/")

const otherToken = "webui-other-tenant-token"

// chromium finds Debian's chromium; without it the test is skipped, or fails with CI=true.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// page is one browser tab on the operator's page, with what the test needs of it.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu       sync.Mutex
	problems []string // console errors and uncaught exceptions
}

func newPage(t *testing.T, base string, downloads string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	p := &page{t: t, ctx: ctx, base: base}
	if err := chromedp.Listen(ctx, func(ev any) {
		var problem string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			problem = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				problem += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				b, _ := json.Marshal(ev.Args)
				problem = "console.error: " + string(b)
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				problem = "log: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if problem != "" {
			p.mu.Lock()
			p.problems = append(p.problems, problem)
			p.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	if downloads != "" {
		if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.shot(filepath.Join(t.TempDir(), "failure.png"))
			t.Logf("screenshot of the page when the test failed: %s", filepath.Join(t.TempDir(), "failure.png"))
		}
	})
	return p
}

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.failShot(what, err)
	}
}

// until waits for the JavaScript expression to be true.
func (p *page) until(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		p.failShot(what, err)
	}
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.failShot("evaluate "+expr, err)
	}
	return v
}

func (p *page) failShot(what string, err error) {
	p.t.Helper()
	name := filepath.Join(p.t.TempDir(), strings.NewReplacer(" ", "-", "/", "-").Replace(what)+".png")
	p.shot(name)
	p.t.Fatalf("%s: %v (screenshot %s)", what, err, name)
}

func (p *page) shot(path string) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		p.t.Logf("screenshot %s: %v", path, err)
	}
}

// doc writes the page's screenshot to docs/<name>.png when -screenshots is set.
func (p *page) doc(name string) {
	p.t.Helper()
	if *screenshots {
		p.eval(`document.querySelector('#toast').classList.remove('show'), ''`)
		time.Sleep(300 * time.Millisecond) // the toast's fade
		p.shot(filepath.Join("..", "..", "docs", name+".png"))
	}
}

// noProblems fails the test if the page logged an error, other than those that contain
// one of expected (the browser logs every answer of 404 it fetched).
func (p *page) noProblems(expected ...string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var left []string
	for _, pr := range p.problems {
		if !slices.ContainsFunc(expected, func(e string) bool { return strings.Contains(pr, e) }) {
			left = append(left, pr)
		}
	}
	if len(left) > 0 {
		p.t.Errorf("the page logged errors:\n%s", strings.Join(left, "\n"))
	}
}

func (p *page) signIn(token string) {
	p.t.Helper()
	p.do("sign in",
		chromedp.Navigate(p.base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin-btn")))
}

func js(s string) string { b, _ := json.Marshal(s); return string(b) }

// The operator's page in headless Chromium against the real binary and Docker: sign in,
// a sandbox made through the API appears without a reload, its page shows it, a file
// uploaded there is in the workspace and downloads again, a command typed into the
// terminal shows its output, keepalive moves the expiry, delete makes it go; another
// tenant's token sees none of it. No console errors throughout.
func TestOperatorPageInABrowser(t *testing.T) {
	chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, remove, err := sandboxdtest.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	cfgPath := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(cfgPath, []byte("tenants:\n  other:\n    tokens: ["+otherToken+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The plain terminal (Debian 12's xterm.js is no browser build; this test does not
	// depend on which is installed).
	srv := sandboxdtest.StartT(t, bin, "SANDBOXD_CONFIG="+cfgPath, "SANDBOXD_UI_XTERM_DIR=-", "SANDBOXD_TTL=1h")
	api, err := client.New(srv.URL, sandboxdtest.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	downloads := t.TempDir()
	p := newPage(t, srv.URL, downloads)

	p.signIn(sandboxdtest.Token)
	p.until("signed in as the default tenant", `document.querySelector('#who').textContent === 'tenant default'`)
	p.until("the empty list", `document.querySelector('#list-status') && document.querySelector('#list-status').textContent.includes('No sandboxes')`)

	// Made through the API: it appears without a reload, well before the list's own
	// refresh (10 s), from the event stream.
	chat := uuid.NewString()
	made := time.Now()
	if _, _, err := api.Create(ctx, chat, client.CreateBody{AgentID: "agent-a"}); err != nil {
		t.Fatal(err)
	}
	p.until("the new sandbox in the list", `!!document.querySelector('tr[data-chat=`+js(chat)+`]')`)
	if waited := time.Since(made); waited > 8*time.Second {
		t.Errorf("the sandbox appeared after %s: not from the event stream", waited)
	}
	if row := p.eval(`document.querySelector('tr[data-chat=` + js(chat) + `]').innerText`); !strings.Contains(row, "agent-a") || !strings.Contains(row, "running") {
		t.Errorf("the sandbox's row: %q", row)
	}
	// A second one, so the list has something to show beside it (and CPU/memory).
	chat2 := uuid.NewString()
	if _, _, err := api.Create(ctx, chat2, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	p.until("the second sandbox", `!!document.querySelector('tr[data-chat=`+js(chat2)+`]')`)
	p.until("memory read from the engine", `[...document.querySelectorAll('#sandboxes td[data-label=Memory]')].some(td => td.textContent.includes('B'))`)
	p.doc("ui-list")

	// Its page.
	p.do("open the sandbox", chromedp.Click(chromedp.CSS(`tr[data-chat="`+chat+`"] a`)))
	p.until("the session shown", `document.querySelector('#session') && document.querySelector('#session').innerText.includes('agent-a')`)
	p.until("the created event", `document.querySelector('#events').innerText.includes('created')`)
	p.until("no refused connections", `document.querySelector('#egress').innerText.includes('None')`)

	// Upload a file through the page, find it in the workspace, download it again.
	local := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(local, []byte("hello from the browser\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.do("upload", chromedp.SetUploadFiles(chromedp.CSS("#upload"), []string{local}), chromedp.Click(chromedp.CSS("#upload-btn")))
	p.until("the uploaded file listed", `!!document.querySelector('[data-download="notes.txt"]')`)
	var got bytes.Buffer
	if _, err := api.Download(ctx, chat, "notes.txt", &got); err != nil || got.String() != "hello from the browser\n" {
		t.Fatalf("the uploaded file in the workspace: %q %v", got.String(), err)
	}
	p.do("download", chromedp.Click(chromedp.CSS(`[data-download="notes.txt"]`)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(downloads, "notes.txt"))
		if err == nil && string(b) == "hello from the browser\n" {
			break
		}
		if time.Now().After(deadline) {
			p.failShot("download", fmt.Errorf("downloaded file: %q %v", b, err))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A command run through the API shows among the recent commands (from the event stream).
	if _, err := api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"sh", "-c", "wc -c notes.txt; exit 3"}}); err != nil {
		t.Fatal(err)
	}
	p.until("the command among the recent ones", `document.querySelector('#execs').innerText.includes('exit 3') && document.querySelector('#execs').innerText.includes('wc -c notes.txt')`)

	// A command typed into the terminal, and its output.
	p.do("open the terminal", chromedp.Click(chromedp.CSS("#term-open")), chromedp.WaitVisible(chromedp.CSS("#term-in")))
	p.do("type a command", chromedp.SendKeys(chromedp.CSS("#term-in"), "echo hello-$((40+2)) in $(pwd)"), chromedp.Click(chromedp.CSS("#term-send")))
	p.until("the command's output", `document.querySelector('#term-out').textContent.includes('hello-42 in /workspace')`)
	p.doc("ui-sandbox")
	p.do("close the terminal", chromedp.Click(chromedp.CSS("#term-open")))

	// Keepalive moves the expiry (24 hours: as far as max_lifetime lets it).
	before := p.eval(`document.querySelector('#expires-in').dataset.expires`)
	p.do("keepalive", chromedp.SetValue(chromedp.CSS("#ttl"), "86400"), chromedp.Click(chromedp.CSS("#keepalive")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-ok")), chromedp.Click(chromedp.CSS("#confirm-ok")))
	p.until("the expiry moved", `document.querySelector('#expires-in') && Date.parse(document.querySelector('#expires-in').dataset.expires) > Date.parse(`+js(before)+`) + 3600000`)
	s, err := api.Get(ctx, chat)
	if err != nil || s.ExpiresAt.Sub(made) < 2*time.Hour {
		t.Errorf("after keepalive through the page: %+v %v", s, err)
	}
	p.until("the keepalive event", `document.querySelector('#events').innerText.includes('kept_alive')`)

	// Delete (confirmed): back to the list, and the sandbox is gone.
	p.do("delete", chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")), chromedp.Click(chromedp.CSS("#confirm-ok")))
	p.until("back on the list without it", `location.hash === '#/' && !!document.querySelector('tr[data-chat=`+js(chat2)+`]') && !document.querySelector('tr[data-chat=`+js(chat)+`]')`)
	if _, err := api.Get(ctx, chat); err == nil {
		t.Errorf("the sandbox deleted through the page still exists")
	}

	// The overview: counts of the last hour and the active sandboxes.
	p.do("overview", chromedp.Navigate(srv.URL+"/ui/#/overview"))
	p.until("the overview", `document.querySelector('#active') && document.querySelector('#active').textContent === '1' && document.querySelector('[data-chart="created,replaced"]').innerText.includes('2 / hour')`)
	p.doc("ui-overview")

	// A phone's width: the list still reads.
	if *screenshots {
		p.do("phone width", chromedp.EmulateViewport(390, 844), chromedp.Navigate(srv.URL+"/ui/#/"))
		p.until("the list on a phone", `!!document.querySelector('tr[data-chat=`+js(chat2)+`]')`)
		p.doc("ui-phone")
		p.do("laptop width", chromedp.EmulateViewport(1280, 900))
	}
	p.noProblems()

	// Another tenant's token sees none of it: no list rows, no overview counts, no events,
	// and the sandbox's page says there is none.
	o := newPage(t, srv.URL, "")
	o.signIn(otherToken)
	o.until("signed in as the other tenant", `document.querySelector('#who').textContent === 'tenant other'`)
	o.until("an empty list", `document.querySelector('#list-status') && document.querySelector('#list-status').textContent.includes('No sandboxes') && !document.querySelector('tr[data-chat]')`)
	o.do("the other tenant's sandbox page", chromedp.Navigate(srv.URL+"/ui/#/s/"+chat2))
	o.until("no such sandbox", `document.querySelector('#sandbox-msg') && document.querySelector('#sandbox-msg').textContent.includes('no sandbox') && document.querySelector('#events').innerText.includes('Nothing recorded')`)
	o.do("the other tenant's overview", chromedp.Navigate(srv.URL+"/ui/#/overview"))
	o.until("nothing counted", `document.querySelector('#active') && document.querySelector('#active').textContent === '0' && document.querySelector('[data-chart="created,replaced"]').innerText.includes('0 / hour')`)
	o.noProblems("404 (Not Found) " + srv.URL + "/v1/chats/" + chat2 + "/sandbox")
}
