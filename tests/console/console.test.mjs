// The operator console in headless Chromium against a real `attune-host serve`. Each test waits
// on what the page or the API shows, never on a fixed sleep; screenshots of each page go to
// target/console-screenshots/.
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, repo, screenshot, signedIn, startHost, until } from './harness.mjs';

describe('operator console', () => {
  let host;
  let browser;
  let admin; // a signed-in admin page, shared by the tests in order

  before(async () => {
    host = await startHost();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await host?.stop();
  });

  test('sign in: a wrong token is refused, the admin token opens the overview, and stays out of URLs and logs', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(host.url);
    await page.getByLabel('API token').fill('attune_not_a_token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token was refused.').waitFor();
    assert.equal(await page.locator('nav').isVisible(), false);
    await context.close();

    admin = await signedIn(browser, host, host.admin);
    const { page: p } = admin;
    await p.locator('#role', { hasText: 'admin' }).waitFor();
    const hostsCard = p.locator('.card', { has: p.getByRole('heading', { name: 'Hosts' }) });
    await hostsCard.locator('code', { hasText: /^host-/ }).waitFor();
    // The chart redraws every 10 s; the heartbeat rule fires every 5 s.
    await p.locator('#chart rect.events').first().waitFor();
    await p.locator('#chart rect.enforcements').first().waitFor();
    // Rates need two samples of /metrics, 5 s apart.
    await until('events/s shows a number', async () => /^\d+\.\d\d$/.test(await p.locator('#events-rate').textContent()));
    await screenshot(p, 'overview');
    assert.ok(!p.url().includes(host.admin), 'the token is in the URL');
    assert.ok(!host.log().includes(host.admin), 'the token is in the log');
    assert.deepEqual(admin.errors, []);
  });

  test('the demo sensor runs and its events arrive live', async () => {
    const { page } = admin;
    await page.getByRole('link', { name: 'Sensors' }).click();
    const row = page.locator('tr[data-sensor="examples_files.dir_watcher"]');
    await row.locator('.sensor-state', { hasText: 'running' }).waitFor();
    await screenshot(page, 'sensors');

    await page.getByRole('link', { name: 'Events' }).click();
    await page.locator('#live-status', { hasText: 'Live.' }).waitFor();
    // The page loaded once and now only follows the stream: a new file's event appearing is live.
    await writeFile(path.join(host.packs, 'examples_files/inbox/console-live.txt'), 'hello\n');
    await page.locator('#events-body tr[data-trigger="examples_files.new_file"]').first().waitFor();
    await page.locator('#enforcements-body tr[data-rule="examples_files.on_new_file"]').first().waitFor();
    await screenshot(page, 'events');

    // The sensor's own page: its recent events, and its state store remembering the file.
    await page.getByRole('link', { name: 'Sensors' }).click();
    await page.getByRole('link', { name: 'examples_files.dir_watcher' }).click();
    const detail = page.locator('#sensor-detail');
    await detail.locator('tr[data-trigger="examples_files.new_file"]').first().waitFor();
    await detail.locator('pre', { hasText: '"console-live.txt"' }).waitFor();
    await screenshot(page, 'sensor');
    assert.deepEqual(admin.errors, []);
  });

  test('disabling the heartbeat rule stops its enforcements', async () => {
    const { page } = admin;
    const heartbeat = 'examples_files.heartbeat';
    const enforcements = async () => (await host.api('GET', `/api/v1/enforcements?rule=${heartbeat}&limit=1000`))
      .body.enforcements.length;
    // It fires every 5 s: wait for one so there is something to stop.
    await until('a heartbeat enforcement', async () => (await enforcements()) > 0);

    await page.getByRole('link', { name: 'Rules' }).click();
    const row = page.locator(`tr[data-rule="${heartbeat}"]`);
    await row.getByRole('button', { name: `Disable ${heartbeat}` }).click();
    await row.locator('.enabled', { hasText: 'no' }).waitFor();
    await page.locator('#rules-status', { hasText: `${heartbeat} disabled.` }).waitFor();
    await screenshot(page, 'rules');
    const atDisable = await enforcements();

    // Watch the live tail for this rule while more than one heartbeat interval passes, measured
    // by the demo sensor's polls (every 2 s): 5 more polls is over 8 s.
    await page.goto(`${host.url}/#/events`);
    await page.getByLabel('Rule').fill(heartbeat);
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.locator('#live-status', { hasText: 'Live.' }).waitFor();
    const tailBefore = await page.locator(`#enforcements-body tr[data-rule="${heartbeat}"]`).count();
    const polls = async () => (await host.api('GET', '/api/v1/sensors')).body.sensors
      .find((s) => s.ref === 'examples_files.dir_watcher').polls;
    const start = await polls();
    await until('5 more polls of the demo sensor', async () => (await polls()) >= start + 5, 60_000);
    assert.equal(await enforcements(), atDisable, 'the disabled heartbeat rule made enforcements');
    assert.equal(await page.locator(`#enforcements-body tr[data-rule="${heartbeat}"]`).count(), tailBefore);
    assert.deepEqual(admin.errors, []);
  });

  test('a rule with a bad operator is refused, the error shown at its field; the dry run explains each leaf', async () => {
    const { page } = admin;
    await page.goto(`${host.url}/#/rules/examples_files.on_new_file`);
    const yaml = page.getByLabel('Rule (YAML)');
    await until('the rule in the editor', async () => (await yaml.inputValue()).includes('greater_or_equal'));
    const text = await yaml.inputValue();
    const line = text.split('\n').findIndex((l) => l.includes('operator: greater_or_equal')) + 1;
    assert.ok(line > 0, text);
    await yaml.fill(text.replace('operator: greater_or_equal', 'operator: bigger_than'));
    await page.getByRole('button', { name: 'Save' }).click();
    const error = page.locator('#rule-error');
    await error.locator('code.field', { hasText: 'conditions.all[0].operator' }).waitFor();
    assert.match(await error.textContent(), new RegExp(`^Line ${line}, conditions\\.all\\[0\\]\\.operator: unknown operator \`bigger_than\``));
    assert.equal(await yaml.getAttribute('aria-invalid'), 'true');
    // The stored rule is unchanged.
    const stored = await host.api('GET', '/api/v1/rules/examples_files.on_new_file');
    assert.equal(stored.body.conditions.all[0].operator, 'greater_or_equal');

    // A dry run of the rule as stored against a payload it does not match.
    await yaml.fill(text);
    await page.getByLabel('Payload (JSON)').fill('{"size": -3, "name": "x", "path": "inbox/x"}');
    await page.getByRole('button', { name: 'Run' }).click();
    const result = page.locator('#dry-result');
    await result.getByText('NOT MATCHED').waitFor();
    const leaf = result.locator('li[data-at="conditions.all[0]"]');
    assert.equal(await leaf.locator('.mark').textContent(), '✗');
    assert.match(await leaf.locator('.reason').textContent(), /-3/);
    await screenshot(page, 'rule-editor');
    assert.deepEqual(admin.errors, []);
  });

  test('the editor reads the pack rule files and writes YAML that reads back the same', async () => {
    const { page } = admin;
    const source = await readFile(path.join(repo, 'sensors/examples_files/rules/on_new_file.yaml'), 'utf8');
    const stored = (await host.api('GET', '/api/v1/rules/examples_files.on_new_file')).body;
    const [parsed, roundTrip] = await page.evaluate(([text, rule]) =>
      [parseYaml(text).value, parseYaml(dumpYaml(rule)).value], [source, stored]);
    assert.deepEqual(roundTrip, stored);
    for (const key of Object.keys(parsed)) assert.deepEqual(parsed[key], stored[key], key);
  });

  test('a crashing sensor becomes quarantined and is restarted from the page', async () => {
    const { page } = admin;
    const flaky = 'console_crash.flaky';
    await page.goto(`${host.url}/#/overview`);
    await page.locator('#quarantined').getByRole('link', { name: flaky }).waitFor();

    await page.getByRole('link', { name: 'Sensors' }).click();
    const row = page.locator(`tr[data-sensor="${flaky}"]`);
    await row.locator('.sensor-state', { hasText: 'quarantined' }).waitFor();
    await rm(path.join(host.packs, 'console_crash/ctl/crash'));
    await row.getByRole('button', { name: `Restart ${flaky}` }).click();
    await row.locator('.sensor-state', { hasText: 'running' }).waitFor();
    await until('the restarted sensor polls', async () => Number(await row.locator('.polls').textContent()) > 2);
    await screenshot(page, 'sensors-restarted');
    assert.deepEqual(admin.errors, []);
  });

  test("an event's page says why a rule did not match", async () => {
    const { page } = admin;
    // The restarted flaky sensor emits ticks; its rule wants n > 1000000.
    const event = await until('a tick event', async () =>
      (await host.api('GET', '/api/v1/events?trigger=console_crash.tick&limit=1')).body.events[0]);
    await page.goto(`${host.url}/#/events`);
    await page.getByLabel('Trigger').fill('console_crash.tick');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByRole('link', { name: `Event ${event.id} on console_crash.tick` }).click();
    const verdict = page.locator('section[data-rule="console_crash.on_tick"]');
    await verdict.locator('.why', { hasText: 'does not match' }).waitFor();
    const leaf = verdict.locator('li[data-at="conditions.all[0]"]');
    assert.equal(await leaf.locator('.mark').textContent(), '✗');
    const reason = await leaf.locator('.reason').textContent();
    assert.match(reason, new RegExp(`found ${event.payload.n}\\b`));
    assert.match(reason, /1000000/);
    await screenshot(page, 'event');
    assert.deepEqual(admin.errors, []);
  });

  test('readonly sees every page but its changes are disabled, and the API refuses them anyway', async () => {
    const { page, context, errors } = await signedIn(browser, host, host.readonly, 390);
    await page.locator('#role', { hasText: 'readonly' }).waitFor();
    await page.locator('#chart svg').waitFor();
    await page.getByRole('link', { name: 'Rules' }).click();
    const disable = page.getByRole('button', { name: 'Disable examples_files.on_new_file' });
    await disable.waitFor();
    assert.equal(await disable.isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'New rule' }).isDisabled(), true);
    const refused = await host.api('POST', '/api/v1/rules/examples_files.on_new_file/disable', host.readonly);
    assert.equal(refused.status, 403);
    // Readable at 390 px: nothing wider than the screen.
    const loaded = { overview: '#chart svg', sensors: 'tr[data-sensor]', rules: 'tr[data-rule]', events: '#live-status:text("Live.")' };
    for (const [route, selector] of Object.entries(loaded)) {
      await page.goto(`${host.url}/#/${route}`);
      await page.locator(`#page[data-page="${route}"] ${selector}`).first().waitFor();
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `#/${route} is ${width} px wide at 390 px`);
    }
    await screenshot(page, 'events-390px');
    assert.deepEqual(errors, []);
    await context.close();
  });
});
