//! The dashboard at `/`: its security headers, and the page itself in headless Chromium driven by
//! Playwright (tests/browser/dashboard.mjs) against the real registry and a real `retagd run`:
//! versions shown, a new build followed without a reload, approval with a wrong and the right
//! token, a freeze set and lifted from the page, a phone in the dark theme.
//! Screenshots go to `target/screenshots/`.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::config::{AUTO, MANUAL};
use support::pipeline::{Daemon, Env, REPO};

const TOKEN: &str = "alice-dashboard-5e1";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test]
async fn the_dashboard_shows_versions_updates_live_and_approves_with_a_token() {
    let browser = repo("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/browser; scripts/test installs it (npm ci), with Debian's chromium"
    );
    let env = Env::start();
    let token = env.dir.path().join("alice-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let approvers = format!(
        "\n[[server.approvers]]\nname = \"alice\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    // A short interval stands in for registry webhooks: the page must follow by itself.
    let config = env.write(&env.config("1s", AUTO, MANUAL).table(&approvers));
    env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    let base = format!("http://{address}");

    // The page and its files carry the security headers; the page stays small.
    let client = support::http_client();
    let mut size = 0;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let answer = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
        let headers = answer.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        size += answer.bytes().await.unwrap().len();
    }
    assert!(size < 200 * 1024, "the page is {size} bytes");

    let screenshots = repo("target/screenshots");
    let node = Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .env("RETAGD_URL", &base)
        .env("REGISTRY_URL", format!("http://{}", env.registry.addr))
        .env("TOKEN", TOKEN)
        .env("SCREENSHOTS", &screenshots)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&node.stdout),
        String::from_utf8_lossy(&node.stderr)
    );
    assert!(
        node.status.success(),
        "{said}\ndaemon log:\n{}",
        daemon.log()
    );
    // What the page did, the registry's records show: alice released the dev build the page
    // displayed; then the page saw v1.2.1 pushed over by hand, so the tag holds other bytes now.
    let dev = env.digest(REPO, "v1.2.1-dev.1").await.unwrap();
    let history: serde_json::Value = client
        .get(format!(
            "{base}/api/v1/pipelines/api-gateway/history?stage=production"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let release = &history["entries"][0];
    assert_eq!(
        (
            &release["to"]["tag"],
            &release["digest"],
            &release["approved_by"]
        ),
        (
            &serde_json::json!("v1.2.1"),
            &serde_json::json!(dev),
            &serde_json::json!("alice")
        ),
        "{history:#}"
    );
    assert_ne!(
        env.digest(REPO, "v1.2.1").await.as_deref(),
        Some(dev.as_str())
    );
    let log = daemon.log();
    assert!(log.contains("approved_by=alice"), "{log}");
    assert!(!log.contains(TOKEN), "the token reached the log:\n{log}");
    for shot in [
        "1-versions",
        "2-refused",
        "3-approved",
        "4-frozen",
        "5-drift",
        "6-dark-phone",
    ] {
        assert!(screenshots.join(format!("dashboard-{shot}.png")).is_file());
    }
}
