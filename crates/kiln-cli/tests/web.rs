//! The web interface in a real browser: headless Chromium driven through
//! chromedriver (WebDriver), against a real master and worker. Screenshots
//! of each page are saved under the target directory (`web-screenshots/`).

use fantoccini::{Client, ClientBuilder, Locator};
use kiln_testing::{free_addr, wait_for, Farm};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const CONFIG: &str = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[component]]
name = "quick"
steps = [ { name = "greet", run = "printf '\\033[32mgreen\\033[0m <b>not bold</b>\\n'; echo greeting=$KILN_PROP_GREETING" } ]

[[component]]
name = "pkg"
artifacts = ["*.deb"]
steps = [ { name = "package", run = "mkdir -p p/DEBIAN && printf 'Package: web-pkg\\nVersion: 1.0~b%s\\nArchitecture: all\\nMaintainer: t <t@localhost>\\nDescription: t\\n' $KILN_BUILD_ID > p/DEBIAN/control && dpkg-deb --root-owner-group -b p web-pkg.deb" } ]

[[component]]
name = "slow"
steps = [ { name = "wait", run = "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done" } ]
"#;

/// chromedriver on a free loopback port; killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    // The WebDriver client links rustls; this test talks plain HTTP on loopback but must pick a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_addr().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver) is installed");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(20), || async {
        reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up, "chromedriver did not start");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1000"]
        }),
    );
    let client =
        ClientBuilder::rustls().expect("tls").capabilities(caps).connect(&url).await.expect("a Chromium session");
    (driver, client)
}

/// Clicks the element matching `css`, finding it again if a live refresh replaced it.
async fn click(c: &Client, css: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.click().await {
                Ok(()) => return,
                Err(err) => last = err.to_string(),
            },
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot click {css}: {last}");
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (bounded) until the element matching `css` has text containing `needle`.
async fn until_text(c: &Client, css: &str, needle: &str, within: Duration) -> bool {
    wait_for(within, || async { text_of(c, css).await.contains(needle) }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn force_follow_and_cancel_builds_in_a_real_browser() {
    let farm = Farm::running(KILN.as_ref(), CONFIG, &[], "w1", &["t"], 2).await;
    let base = farm.url();
    let (_driver, c) = browser().await;

    // Reading is anonymous; acting needs a login.
    c.goto(&format!("{base}/builders/quick/t")).await.expect("builder page");
    assert!(c.find(Locator::Css("a[href^='/login']")).await.is_ok(), "a log-in link instead of the form");
    // A forged POST without a session is refused.
    let forged = reqwest::Client::new()
        .post(format!("{base}/force"))
        .form(&[("component", "quick")])
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), 401);
    // A session without the form's CSRF token is refused too (a cross-site form cannot know it).
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let bad_login = http.post(format!("{base}/login")).form(&[("token", "wrong")]).send().await.expect("login");
    assert_eq!(bad_login.status(), 401);
    let login = http
        .post(format!("{base}/login"))
        .form(&[("token", farm.admin_token().as_str()), ("next", "//evil.example/")])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/", "no open redirect");
    let cookie = login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("cookie").to_string();
    assert!(login.headers()["set-cookie"].to_str().expect("cookie").contains("HttpOnly; SameSite=Strict"));
    let no_csrf = http
        .post(format!("{base}/force"))
        .header("cookie", &cookie)
        .form(&[("component", "quick"), ("csrf", "not-the-token")])
        .send()
        .await
        .expect("post");
    assert_eq!(no_csrf.status(), 403);

    c.goto(&format!("{base}/login?next=/builders/quick/t")).await.expect("login page");
    c.find(Locator::Css("input[name=token]"))
        .await
        .expect("token field")
        .send_keys(&farm.admin_token())
        .await
        .expect("type");
    click(&c, "form.login button").await;
    assert!(until_text(&c, "header .who", "Logged in as admin", Duration::from_secs(10)).await);
    assert!(c.current_url().await.expect("url").path().ends_with("/builders/quick/t"));

    // Force a build with a property through the form; its log appears.
    c.find(Locator::Css("input[name=prop_key]")).await.expect("prop").send_keys("greeting").await.expect("type");
    c.find(Locator::Css("input[name=prop_value]")).await.expect("value").send_keys("hello-web").await.expect("type");
    click(&c, "details.force button[type=submit]").await;
    assert!(
        until_text(&c, "pre.log", "greeting=hello-web", Duration::from_secs(30)).await,
        "the log shows the property\n{}\n{:?}",
        c.source().await.unwrap_or_default(),
        c.execute("return [window.kilnChanges, window.kilnRefreshes, window.kilnSseErrors, typeof EventSource, document.body.dataset.live]", vec![]).await
    );
    assert!(
        until_text(&c, "h1 .state", "succeeded", Duration::from_secs(30)).await,
        "{:?}",
        c.execute("return [window.kilnChanges, window.kilnRefreshes, window.kilnSseErrors, document.body.dataset.live, document.querySelector('h1').outerHTML]", vec![]).await
    );
    let html = c.find(Locator::Css("pre.log")).await.expect("log").html(true).await.expect("html");
    assert!(html.contains("<span class=\"ansi-2\">green</span>"), "ANSI colours rendered: {html}");
    assert!(html.contains("&lt;b&gt;not bold&lt;/b&gt;"), "log text escaped: {html}");
    let quick_url = c.current_url().await.expect("url").path().to_string();
    shot(&c, "build-succeeded").await;

    // A running build: the log follows live, then the Cancel button ends it.
    c.goto(&format!("{base}/builders/slow/t")).await.expect("builder page");
    click(&c, "details.force button[type=submit]").await;
    assert!(until_text(&c, "pre.log", "tick 5", Duration::from_secs(30)).await, "the log grows while running");
    let before = text_of(&c, "pre.log").await;
    assert!(until_text(&c, "pre.log", "tick 12", Duration::from_secs(20)).await, "and keeps following: {before}");
    // The running step's timer counts without a reload (it stuck at its
    // rendered value before).
    let first = text_of(&c, "section.step time.since").await;
    let counted = wait_for(Duration::from_secs(10), || async {
        let now = text_of(&c, "section.step time.since").await;
        now != first && now.starts_with("for ")
    })
    .await;
    assert!(counted, "the timer stays at {first:?}");
    shot(&c, "build-running").await;
    let slow_url = c.current_url().await.expect("url").path().to_string();
    click(&c, "form[action$='/cancel'] button").await;
    assert!(
        until_text(&c, "h1 .state", "cancelled", Duration::from_secs(30)).await,
        "{}",
        c.source().await.unwrap_or_default()
    );
    let reason = text_of(&c, "p.reason").await;
    assert_eq!(reason, "cancelled by admin");
    shot(&c, "build-cancelled").await;

    // The console's cells have the right colours and link to the builds.
    c.goto(&format!("{base}/")).await.expect("console");
    let cell = |path: &str| format!("a.bulb[href='{path}']");
    let quick_cell = c.find(Locator::Css(&cell(&quick_url))).await.expect("quick's cell");
    assert_eq!(quick_cell.attr("class").await.expect("class").as_deref(), Some("bulb ok"));
    let slow_cell = c.find(Locator::Css(&cell(&slow_url))).await.expect("slow's cell");
    assert_eq!(slow_cell.attr("class").await.expect("class").as_deref(), Some("bulb cancel"));
    assert!(text_of(&c, ".summary").await.contains("need attention"));
    shot(&c, "console").await;
    // Grouped by component instead: a column group per component, its targets beneath.
    c.goto(&format!("{base}/?group=component")).await.expect("console by component");
    let groups: Vec<String> = {
        let mut v = Vec::new();
        for e in c.find_all(Locator::Css("th.group")).await.expect("groups") {
            v.push(e.text().await.unwrap_or_default());
        }
        v
    };
    assert_eq!(groups, ["quick", "pkg", "slow"]);
    assert!(c.find(Locator::Css(&cell(&slow_url))).await.is_ok(), "the same cells, grouped differently");
    c.goto(&format!("{base}/")).await.expect("console");

    // The console updates by itself: a build forced elsewhere shows up running, then green.
    let id = farm
        .client()
        .create_builds(&kiln_proto::api::BuildRequestBody { components: vec!["quick".into()], ..Default::default() })
        .await
        .expect("create")
        .builds[0]
        .id;
    let sel = format!("a.bulb[href='/builds/{id}']");
    let live = wait_for(Duration::from_secs(20), || async {
        match c.find(Locator::Css(&sel)).await {
            Ok(e) => e.attr("class").await.ok().flatten().as_deref() == Some("bulb ok"),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        live,
        "the console shows the new build without a reload: {:?}\n{}",
        c.execute("return [window.kilnChanges, window.kilnRefreshes, window.kilnSseErrors, document.body.dataset.live, document.activeElement.outerHTML]", vec![]).await,
        text_of(&c, "table.console tbody").await
    );

    // Repositories: a package built here is promoted from dev to stable with its button.
    c.goto(&format!("{base}/builders/pkg/t")).await.expect("builder page");
    click(&c, "details.force button[type=submit]").await;
    assert!(
        until_text(&c, "h1 .state", "succeeded", Duration::from_secs(30)).await,
        "{}",
        c.source().await.unwrap_or_default()
    );
    c.goto(&format!("{base}/repos/dev")).await.expect("channel page");
    assert!(until_text(&c, "main", "web-pkg", Duration::from_secs(10)).await);
    click(&c, "form[action='/repos/dev/change'] button").await;
    assert!(until_text(&c, "h1", "Channel dev", Duration::from_secs(10)).await);
    c.goto(&format!("{base}/repos/stable")).await.expect("stable");
    assert!(until_text(&c, "main", "web-pkg", Duration::from_secs(10)).await, "promoted into stable");
    shot(&c, "channel-stable").await;

    // The packages view: pkg on t, what dev and stable hold of it.
    c.goto(&format!("{base}/packages")).await.expect("packages");
    let row = text_of(&c, "table.packages tbody").await;
    assert!(row.contains("pkg") && row.contains("dev 1.0~b") && row.contains("stable 1.0~b"), "{row}");

    // Every page at a desktop width and at a phone's: the navigation and
    // the log-in link stay on screen, nothing widens the page itself (the
    // console's grid scrolls inside its box).
    let pages = [
        ("/", "console"),
        ("/builders", "builders"),
        ("/builders/pkg/t", "builder"),
        ("/packages", "packages"),
        ("/workers", "workers"),
        ("/repos", "repos"),
        ("/repos/dev", "channel"),
    ];
    for (width, size) in [(1400, "wide"), (400, "narrow")] {
        c.set_window_size(width, 900).await.expect("window size");
        for (path, name) in pages {
            c.goto(&format!("{base}{path}")).await.expect("page");
            assert!(c.find(Locator::Css("main h1, main table")).await.is_ok(), "{path} renders");
            let fits = c
                .execute(
                    "const w = document.documentElement.clientWidth;\
                     const inView = (el) => { const r = el.getBoundingClientRect(); return r.left >= 0 && r.right <= w + 1; };\
                     return [document.documentElement.scrollWidth <= w + 1,\
                             [...document.querySelectorAll('header.top nav a, header.top .who a, header.top .who button')].every(inView)];",
                    vec![],
                )
                .await
                .expect("measure");
            assert_eq!(fits, serde_json::json!([true, true]), "{path} at {width} px: page width, header links in view");
            shot(&c, &format!("{name}-{size}")).await;
        }
    }
    c.set_window_size(1400, 900).await.expect("window size");
    assert!(until_text(&c, "main", "signed-by=/etc/apt/keyrings/kiln-dev.asc", Duration::from_secs(10)).await);
    c.goto(&format!("{base}/workers")).await.expect("workers");
    assert!(until_text(&c, "main table", "connected", Duration::from_secs(10)).await);
    c.close().await.expect("close the browser");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_can_require_a_login_to_read() {
    let config = format!("[master]\nanonymous_read = false\n{CONFIG}");
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let base = farm.url();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let page = http.get(format!("{base}/builders")).send().await.expect("get");
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login?next=/builders");
    let api = http.get(format!("{base}/api/v1/builds")).send().await.expect("get");
    assert_eq!(api.status(), 401);
    let api = http.get(format!("{base}/api/v1/builds")).bearer_auth(farm.admin_token()).send().await.expect("get");
    assert_eq!(api.status(), 200);
    assert_eq!(http.get(format!("{base}/login")).send().await.expect("get").status(), 200);
    assert_eq!(
        http.get(format!("{base}/repos/dev/key.asc")).send().await.expect("get").status(),
        200,
        "apt and dnf cannot log in"
    );
    // A channel's page (its packages and builds) is a page like the others.
    let channel = http.get(format!("{base}/repos/dev")).send().await.expect("get");
    assert_eq!(channel.status(), 303);
    assert_eq!(channel.headers()["location"], "/login?next=/repos/dev");
    // Logged in, pages read again.
    let login =
        http.post(format!("{base}/login")).form(&[("token", farm.admin_token().as_str())]).send().await.expect("login");
    let cookie = login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("cookie").to_string();
    let page = http.get(format!("{base}/builders")).header("cookie", cookie).send().await.expect("get");
    assert_eq!(page.status(), 200);
}
