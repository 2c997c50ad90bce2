//! The admin console in real headless Chromium, as an operator meets it: refused without
//! credentials, logged in with Basic credentials, a dead event of a failing receiver found from
//! the failures list, a forged form of another site refused, the event redriven with its button
//! and, with the receiver fixed, delivered, which the page says.
//!
//! Screenshots of each page go to `target/browser-artifacts/console/`.

use fantoccini::Locator;
use serde_json::json;

use super::chrome::{self, Browser, Page};
use crate::helpers::{Backend, OPERATOR, TestServer, with_operator};
use crate::outbox::{Receiver, accept_all, config_with};

/// The text of the element `css` selects, or why there is none yet.
async fn text_of(page: &Page, css: &str) -> Result<String, String> {
    let element = page.client.find(Locator::Css(css)).await.map_err(|e| format!("no {css}: {e}"))?;
    element.text().await.map_err(|e| e.to_string())
}

/// Waits until the element `css` selects shows `wanted`.
async fn wait_text(page: &Page, css: &str, wanted: &str) -> String {
    page.wait_for(&format!("{css} showing {wanted:?}"), || async {
        let text = text_of(page, css).await?;
        if text.contains(wanted) { Ok(text) } else { Err(text) }
    })
    .await
}

/// The state the store gives event `seq`.
async fn state_of(server: &TestServer, seq: i64) -> String {
    server.store.event(seq).await.unwrap().expect("the event").0.state
}

#[tokio::test]
async fn an_operator_finds_a_dead_event_and_redrives_it_from_the_console() {
    const TEST: &str = "an_operator_finds_a_dead_event_and_redrives_it_from_the_console";
    let Some(browser) = Browser::find(TEST) else { return };
    let receiver = Receiver::start(std::sync::Arc::new(|_| 422)).await;
    let config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0, 0.05])]));
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    server.api().push("/taskChanges", json!([{"id": "invoice-7", "total": 120}])).await;
    let seq = crate::console::wait_dead(&server, 1).await[0];

    let artifacts = chrome::artifacts_dir("console");
    let profiles = tempfile::tempdir().unwrap();
    let driver = browser.driver().await;
    let page = driver.open("operator", &profiles.path().join("operator"), &artifacts).await;
    let base = server.base_url.clone();

    // Without credentials: nothing of the console (the browser waits at its login prompt), and
    // a request of the server's own page gets the 401 and challenge that bring that prompt.
    page.client.goto(&format!("{base}/admin")).await.unwrap();
    page.screenshot("1-refused").await;
    assert!(text_of(&page, "#nav").await.is_err(), "a console page without credentials");
    page.client.goto(&format!("{base}/healthz")).await.unwrap();
    let script = "const done = arguments[0]; fetch('/admin', {credentials: 'omit'}).then(\
                  r => done([r.status, r.headers.get('www-authenticate')]), e => done([0, String(e)]));";
    let refused = page.client.execute_async(script, vec![]).await.expect("the page's fetch");
    assert_eq!(refused[0], json!(401), "{refused}");
    assert!(refused[1].as_str().is_some_and(|c| c.starts_with("Basic")), "{refused}");

    // Logged in: the credentials in the address, as a browser's login prompt would send them.
    let authority = base.trim_start_matches("http://");
    let password = OPERATOR.1.replace(' ', "%20");
    page.client.goto(&format!("http://{}:{password}@{authority}/admin", OPERATOR.0)).await.unwrap();
    wait_text(&page, "#subscriptions", "erp").await;
    wait_text(&page, "#entities", "Task").await;
    page.screenshot("2-overview").await;

    // The failures list shows the dead event with the receiver's answer.
    page.click("#nav-failures").await;
    let row = wait_text(&page, &format!("#event-{seq}"), "invoice-7").await;
    assert!(row.contains("422"), "the last status: {row}");
    page.screenshot("3-failures").await;
    page.click_at(Locator::Css(&format!("#event-{seq} a"))).await;
    wait_text(&page, "#last-error", "422").await;
    page.screenshot("4-dead-event").await;

    // Another site's page posting to the console with the operator's remembered credentials:
    // refused, and the event stays dead.
    let forged = format!(
        "data:text/html,<form method=post action='{base}/admin/events/{seq}/skip'>\
         <input name=csrf value=guessed></form><script>document.forms[0].submit()</script>"
    );
    page.client.goto(&forged).await.unwrap();
    let refused = wait_text(&page, "#error", "403").await;
    page.screenshot("5-forged-refused").await;
    assert_eq!(state_of(&server, seq).await, "dead", "the forged skip changed nothing: {refused}");

    // Fixed receiver, redrive clicked: the page says it was redriven, then that it was delivered.
    receiver.set_policy(accept_all());
    page.client.goto(&format!("{base}/admin/events/{seq}")).await.unwrap();
    page.click("#redrive").await;
    wait_text(&page, "#flash", "redriven").await;
    page.screenshot("6-redriven").await;
    receiver.wait_for(20, "the redriven event", |d| d.iter().any(|e| e["object_id"] == "invoice-7")).await;
    page.wait_for("the page saying delivered", || async {
        page.client.refresh().await.map_err(|e| e.to_string())?;
        let attempts = text_of(&page, "#attempts").await?;
        let state = text_of(&page, "h1").await?;
        if state.to_lowercase().contains("delivered") && attempts.contains("delivered") {
            Ok(())
        } else {
            Err(format!("{state} / {attempts}"))
        }
    })
    .await;
    page.screenshot("7-delivered").await;
    assert_eq!(state_of(&server, seq).await, "delivered");
    page.close().await;
    server.stop().await;
}
