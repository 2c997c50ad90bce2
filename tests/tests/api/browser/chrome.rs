//! Headless Chromium driven through WebDriver: a `chromedriver` process of the test's own on a
//! free port, and pages (each a browser profile of its own: a device) with waits on what they
//! show. Chromium and chromedriver are Debian's `chromium` and `chromium-driver`; without them the
//! tests fail, unless `SYNC_TEST_SKIP` names `browser` outside `CI`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::SKIP_VAR;

/// How long a page gets to show what a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Where screenshots are written, one folder per test: `target/browser-artifacts/<test>/`.
pub fn artifacts_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts").join(test);
    std::fs::create_dir_all(&dir).expect("the artifacts folder");
    dir
}

/// The Chromium and chromedriver programs, found on `PATH`.
pub struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    /// The installed browser, or `None` when it is missing and [`SKIP_VAR`] names `browser`
    /// (outside `CI`; the test then prints `SKIPPED`). Missing otherwise, `test` fails saying
    /// what to install, so that a run without a browser cannot pass for one that tested it.
    pub fn find(test: &str) -> Option<Self> {
        let chromium = which(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = which(&["chromedriver"]);
        if let (Some(chromium), Some(chromedriver)) = (chromium.clone(), chromedriver.clone()) {
            return Some(Self { chromium, chromedriver });
        }
        let missing = [("chromium", chromium.is_none()), ("chromedriver", chromedriver.is_none())]
            .iter()
            .filter(|(_, absent)| *absent)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" and ");
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let skipped = std::env::var(SKIP_VAR).is_ok_and(|list| list.split(',').any(|s| s.trim() == "browser"));
        assert!(
            skipped && !ci,
            "{test} needs a browser: {missing} not found on PATH (apt-get install chromium chromium-driver), \
             or {SKIP_VAR}=browser to skip it{}",
            if ci { " (not under CI, which runs every test)" } else { "" }
        );
        eprintln!("SKIPPED: {test} in a browser: {SKIP_VAR} names it, and {missing} not found on PATH");
        None
    }

    /// Starts chromedriver on a free port and waits until it says it is ready.
    pub async fn driver(&self) -> Driver {
        // chromedriver cannot take port 0: a port found free may be taken before it binds, so a
        // start that fails is retried on another port.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            match Driver::start(&self.chromedriver, &self.chromium, port).await {
                Ok(driver) => return driver,
                Err(why) => failures.push(why),
            }
        }
        panic!("chromedriver did not start: {failures:#?}");
    }
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

/// A running chromedriver; killed when dropped.
pub struct Driver {
    url: String,
    chromium: PathBuf,
    _process: tokio::process::Child,
}

impl Driver {
    async fn start(program: &Path, chromium: &Path, port: u16) -> Result<Self, String> {
        let mut child = tokio::process::Command::new(program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = child.stderr.take().unwrap();
        // Read on for the driver's whole life, so that it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("chromedriver: {line}");
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let said = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = out.next_line().await {
                if line.contains("started successfully on port") {
                    return Ok(());
                }
                if line.to_ascii_lowercase().contains("address already in use") || line.contains("bind() failed") {
                    return Err(format!("port {port}: {line}"));
                }
            }
            Err(format!("port {port}: chromedriver exited"))
        })
        .await
        .map_err(|_| format!("port {port}: chromedriver said nothing within 20 s"))?;
        said?;
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        // The status endpoint is what a session needs; wait until it says ready.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.get(format!("{url}/status")).send().await;
            if let Ok(answer) = status
                && let Ok(body) = answer.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return Ok(Self { url, chromium: chromium.to_owned(), _process: child });
            }
            if Instant::now() > deadline {
                return Err(format!("port {port}: /status never answered ready"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser window with a profile of its own in `profile` (cookies, localStorage): one
    /// device. Screenshots go to `artifacts` as `<name>-<step>.png`.
    pub async fn open(&self, name: &str, profile: &Path, artifacts: &Path) -> Page {
        let args = [
            "--headless=new".to_owned(),
            // Tests run as root, where Chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--window-size=820,720".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session for {name}: {e}"));
        Page { client, name: name.to_owned(), artifacts: artifacts.to_owned() }
    }
}

/// One browser window.
pub struct Page {
    /// The WebDriver session.
    pub client: Client,
    name: String,
    artifacts: PathBuf,
}

impl Page {
    /// Waits until `probe` gives a value, for [`DEADLINE`] at most; the panic says what was
    /// awaited and what the page last showed.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match probe().await {
                Ok(value) => return value,
                Err(last) if Instant::now() > deadline => {
                    self.screenshot("timeout").await;
                    panic!("{}: {what} not seen within {DEADLINE:?}; last: {last}", self.name)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Runs `script` (a function body, which may `return` a JSON value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{}: script failed: {e}", self.name))
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        self.click_at(Locator::Css(css)).await
    }

    /// Clicks the element `locator` finds. The page redraws its list after every sync, so an
    /// element found may be replaced before the click lands: it is then found again.
    pub async fn click_at(&self, locator: Locator<'_>) {
        self.wait_for(&format!("a click on {locator:?}"), || async {
            let element = self.client.find(locator).await.map_err(|e| e.to_string())?;
            match element.click().await {
                Ok(()) => Ok(()),
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    Err("the element was replaced".to_owned())
                }
                Err(e) => panic!("{}: click on {locator:?}: {e}", self.name),
            }
        })
        .await
    }

    /// Types `text` into the element `css` selects, after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field =
            self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Writes a screenshot of the window to the artifacts folder, as `<page>-<step>.png`.
    pub async fn screenshot(&self, step: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.name));
        let path = self.artifacts.join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Ends the WebDriver session (the window closes).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
