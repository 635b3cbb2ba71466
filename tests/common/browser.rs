//! Headless Chromium (Debian's `chromium`, which `.ci/run` installs) driving the
//! chat example's page.

use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A headless Chromium; `None` (the test skips) only when it is missing and
/// `MULTINODE_SKIP_BROWSER` is set.
pub fn launch() -> Option<Browser> {
    let Some(path) = chromium() else {
        if std::env::var_os("MULTINODE_SKIP_BROWSER").is_some() {
            eprintln!("MULTINODE_SKIP_BROWSER is set and Chromium is missing: not run");
            return None;
        }
        panic!("the browser test needs Chromium: apt-get install chromium (or set MULTINODE_SKIP_BROWSER=1)");
    };
    let args = [
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
    ];
    let options = LaunchOptions::default_builder()
        .path(Some(path))
        .headless(true)
        .sandbox(false)
        .args(args.iter().map(std::ffi::OsStr::new).collect())
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Some(Browser::new(options).expect("start Chromium"))
}

/// Opens the chat page at `url` in `tab`; the node its event stream is on.
pub fn open_chat(tab: &Tab, url: &str) -> usize {
    tab.navigate_to(url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    let status = tab
        .wait_for_element_with_custom_timeout("#status[data-node]", Duration::from_secs(10))
        .expect("the page says which node it is connected through");
    status
        .get_attribute_value("data-node")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

/// Types `text` as `user` in the page and sends it.
pub fn post_in_page(tab: &Tab, user: &str, text: &str) {
    tab.activate().unwrap(); // input goes to the tab in front
    tab.wait_for_element("#user").unwrap().click().unwrap();
    tab.type_str(user).unwrap();
    tab.wait_for_element("#text").unwrap().click().unwrap();
    tab.type_str(text).unwrap();
    tab.wait_for_element("#send").unwrap().click().unwrap();
}

/// The first message shown in the page, waiting up to 10 s for it.
pub fn first_message(tab: &Tab) -> String {
    tab.wait_for_element_with_custom_timeout("#messages li", Duration::from_secs(10))
        .expect("the message appears in the page")
        .get_inner_text()
        .unwrap()
}

/// Writes a screenshot of `tab` under the tests' scratch folder, for a person
/// to look at.
pub fn screenshot(tab: &Tab, name: &str) {
    tab.activate().unwrap(); // a tab behind another one is not painted
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}
