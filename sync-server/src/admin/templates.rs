//! The console's HTML templates (minijinja), built into the binary and parsed once. Every value is
//! HTML-escaped on output (the templates end in `.html`), so text from the store (ids, payloads,
//! receivers' errors) can never become markup.
//!
//! Stable element ids and names, for tests that drive the pages in a browser:
//!
//! | page | ids and names |
//! |---|---|
//! | every page | `#nav` (links `#nav-overview`, `#nav-failures`, `#nav-search`, `#nav-audit`), `#flash` (the message of the last action), `#read-only` (shown in read-only mode), `#operator`; every form that changes something has a hidden input `name="csrf"` |
//! | overview `/admin` | `#health`, `#entities` (a row per entity: `id="entity-NAME"`), `#subscriptions` (`id="subscription-NAME"`, with forms `#enable-NAME` / `#disable-NAME`, the reason input `name="reason"`), `#leases`, `#long-polls` |
//! | failures `/admin/failures` | the filter form `#filter` (inputs `subscription`, `entity`, `object_id`, `partition`, `event_id`, `error`, `state`, `from`, `until`; button `#apply`), `#matching` (the count), the table `#failures` (a row per event: `id="event-SEQ"`, checkbox `name="seq"` `value="SEQ"`), buttons `#redrive-selected` and `#skip-selected` of the form `#selection`, the form `#redrive-matching` with button `#redrive-all`, the link `#next` |
//! | confirmation (after `#redrive-all`) | `#confirm` (the question, "Redrive N events?"), button `#confirm-redrive`, link `#cancel` |
//! | event `/admin/events/SEQ` | `#event`, `#last-error`, `<details id="payload">`, `#attempts` (newest first, a row per attempt: `class="attempt"`), buttons `#redrive` and `#skip` |
//! | search `/admin/search` | the form `#search` (input `name="q"`, button `#search-button`), `#results` (rows `id="event-SEQ"`) |
//! | audit log `/admin/audit` | `#audit` (a row per action: `class="audit-entry"`) |
//! | error pages | `#error` (the status), `#error-message` |

use std::sync::LazyLock;

use minijinja::Environment;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("failures.html", include_str!("templates/failures.html")),
    ("events.html", include_str!("templates/events.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("event.html", include_str!("templates/event.html")),
    ("search.html", include_str!("templates/search.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("error.html", include_str!("templates/error.html")),
];

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // An undefined name is a bug of this module: fail the page rather than print nothing.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Block tags leave no blank lines behind: the pages' source stays readable too.
    let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
    env.set_syntax(syntax.expect("the default delimiters are valid"));
    for (name, source) in TEMPLATES {
        // The templates are part of the binary, and a test renders each: a parse error cannot ship.
        env.add_template(name, source).unwrap_or_else(|e| panic!("the console template {name} is invalid: {e}"));
    }
    env
});

/// `name` rendered with `context`.
pub(super) fn render(name: &str, context: minijinja::Value) -> Result<String, minijinja::Error> {
    ENVIRONMENT.get_template(name)?.render(context)
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn every_template_parses_and_escapes_what_it_shows() {
        for (name, _) in TEMPLATES {
            ENVIRONMENT.get_template(name).unwrap();
        }
        let chrome =
            context! { operator => "<ops>", csrf => "c", read_only => false, flash => "<b>1</b>", section => "x" };
        let page = render("error.html", context! { chrome, status => 404, message => "no <script>" }).unwrap();
        assert!(page.contains("no &lt;script&gt;"), "{page}");
        assert!(page.contains("&lt;b&gt;1&lt;"), "{page}");
        assert!(!page.contains("<script>") && !page.contains("<b>1"), "{page}");
    }
}
