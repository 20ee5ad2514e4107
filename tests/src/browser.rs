//! A headless Chromium driven over WebDriver (`chromedriver`, both from
//! Debian's `chromium` and `chromium-driver` packages), for the console's
//! browser tests. The protocol is plain HTTP with JSON: this speaks just
//! what the tests use.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_host::client::HostClient;

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser and driver binaries, or why they are missing.
pub fn binaries() -> Result<(String, String), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .find(|n| std::path::Path::new(n).exists())
            .map(|n| n.to_string())
    };
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err("headless Chromium is needed for the console's tests: `apt-get install chromium chromium-driver` (cargo xtask test installs them when it may)".into()),
    }
}

/// One browser session; the driver is stopped when it drops.
pub struct Browser {
    driver: std::process::Child,
    client: HostClient,
    session: String,
}

impl Browser {
    /// Start `chromedriver` on a free loopback port and open a headless
    /// session.
    pub async fn start() -> Result<Browser, String> {
        let (chromium, driver_bin) = binaries()?;
        let port = crate::free_addr().port();
        let driver = std::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver does not start: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let client = HostClient::new(&format!("http://{addr}"), None);
        let started = Instant::now();
        while client
            .call(hyper::Method::GET, "/status", None, &[])
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("chromedriver did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut b = Browser {
            driver,
            client,
            session: String::new(),
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }}});
        let v = b.call(hyper::Method::POST, "/session", Some(caps)).await?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {v}"))?
            .to_string();
        Ok(b)
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let reply = self
            .client
            .call(method, path, body.map(|b| b.to_string().into_bytes()), &[])
            .await
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!("{path}: {} {}", reply.status, reply.body));
        }
        Ok(reply.body["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Open `url`.
    pub async fn go(&self, url: &str) -> Result<(), String> {
        self.call(
            hyper::Method::POST,
            &self.at("/url"),
            Some(json!({ "url": url })),
        )
        .await
        .map(|_| ())
    }

    /// Wait (up to `within`) for an element matching `css`.
    pub async fn find(&self, css: &str, within: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let found = self
                .call(
                    hyper::Method::POST,
                    &self.at("/element"),
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            match found {
                Ok(v) => {
                    return v[ELEMENT]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{css}: {v}"));
                }
                Err(e) if started.elapsed() > within => {
                    return Err(format!("{css} not found: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Whether an element matching `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        self.count(css).await > 0
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.call(
            hyper::Method::POST,
            &self.at("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
    }

    /// Click the element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let id = self.find(css, Duration::from_secs(10)).await?;
        self.call(
            hyper::Method::POST,
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await
        .map(|_| ())
    }

    /// Type `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.find(css, Duration::from_secs(10)).await?;
        self.call(
            hyper::Method::POST,
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await
        .map(|_| ())
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let id = self.find(css, Duration::from_secs(10)).await?;
        let v = self
            .call(
                hyper::Method::GET,
                &self.at(&format!("/element/{id}/text")),
                None,
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Wait (up to `within`) until the text of `css` satisfies `ok`.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let t = self.text(css).await.unwrap_or_default();
            if ok(&t) {
                return Ok(t);
            }
            if started.elapsed() > within {
                return Err(format!("{css}: still {t:?}"));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Run `script` in the page; its return value.
    pub async fn run(&self, script: &str) -> Result<Value, String> {
        self.call(
            hyper::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Accept the `confirm()` dialog that is open.
    pub async fn accept_dialog(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self
                .call(
                    hyper::Method::POST,
                    &self.at("/alert/accept"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(5) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Save a screenshot of the page as PNG at `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        use base64::Engine;
        let v = self
            .call(hyper::Method::GET, &self.at("/screenshot"), None)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
