// postgres.js (3.x) through pgmux across column type changes made through pgmux and straight on
// PostgreSQL (int -> text -> bigint -> numeric -> text), as asyncpg_types.py does for asyncpg.
// postgres.js prepares a named statement per query text and connection by default, keeps its
// result columns (the RowDescription of its first run) and decodes every later run with them;
// it prepares again once when PostgreSQL refuses the old statement (an error whose routine is
// RevalidateCachedQuery: 0A000 cached plan must not change result type). Every value must come
// back as its column is typed now (the JS type, and the column's type oid postgres.js holds),
// never decoded with a statement of another shape under the old name; and the same sequence on
// a direct connection must get the same answer at every step, the same SQLSTATE where it gets
// an error. Two passes: `prepare: true` (its default: named statements) and `prepare: false`
// (what its docs advise behind PgBouncer's transaction mode: the unnamed statement, served from
// pgmux's cache of unnamed statements, which after DDL made straight on PostgreSQL must cost
// no error, as on a direct connection: docs/COMPATIBILITY.md, session 22).
//
// usage: node postgres_js_types.js MUX_DSN DIRECT_DSN TABLE   (NODE_PATH: where postgres is)

'use strict'

const postgres = require('postgres')

const [muxDsn, directDsn, table] = process.argv.slice(2)
if (!table) {
  console.error('usage: node postgres_js_types.js MUX_DSN DIRECT_DSN TABLE')
  process.exit(2)
}

let step = 'connecting'
// A hang fails the script with where it was (the harness kills it at 120 s, without that).
setTimeout(() => {
  console.error(`postgres_js_types: no answer after 90 s at: ${step}`)
  process.exit(1)
}, 90000).unref()

// postgres.js's URL parser takes neither an empty host nor libpq's `host=` query parameter,
// which the direct DSN names PostgreSQL's unix socket directory with
// (postgresql://postgres@/app?host=/dir&port=N): the options, from either DSN.
function options(dsn) {
  const url = new URL(dsn.replace(/^(postgres(?:ql)?:\/\/[^/]*@|postgres(?:ql)?:\/\/)\//, '$1localhost/'))
  const q = url.searchParams
  return {
    host: q.get('host') || url.hostname,
    port: Number(q.get('port') || url.port || 5432),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database: decodeURIComponent(url.pathname.slice(1)),
  }
}

function connect(dsn, prepare) {
  return postgres({
    ...options(dsn),
    max: 1,
    prepare,
    onnotice: () => {},
    // int8 as a BigInt (postgres.js reads it as a string by default, like text and numeric).
    types: { bigint: postgres.BigInt },
  })
}

// What a query answered: its value's JS type and text and its column's type oid, or the
// SQLSTATE of its error.
async function outcome(query) {
  try {
    const r = await query
    if (r.length !== 1) return `${r.length} rows`
    return `${typeof r[0].a} ${String(r[0].a)} (oid ${r.columns[0].type})`
  } catch (e) {
    if (!e.code) throw e
    return `error ${e.code} (${e.message})`
  }
}
const code = (o) => (o.startsWith('error') ? o.split(' ').slice(0, 2).join(' ') : o)

// One pass on `tbl`: pgmux and direct readers with `prepare`, the same runs on both.
async function pass(prepare, tbl) {
  const admin = connect(directDsn, true) // DDL straight on PostgreSQL
  const other = connect(muxDsn, true) // DDL through pgmux
  const mux = connect(muxDsn, prepare)
  const direct = connect(directDsn, prepare)
  step = `prepare: ${prepare}: setup`
  await admin`DROP TABLE IF EXISTS ${admin(tbl)}`
  await admin`CREATE TABLE ${admin(tbl)} (a int)`
  await admin`INSERT INTO ${admin(tbl)} VALUES (1000)`
  await admin`GRANT ALL ON ${admin(tbl)} TO PUBLIC`

  // Three texts, as postgres.js sends them: without parameters (Parse, Describe of the statement,
  // Bind, Execute, Sync in one write; with prepare: true only Bind, Execute, Sync once prepared),
  // with a parameter the column's type does not decide (Parse and Describe behind a Flush, then
  // Bind, Execute, Sync), and with one typed from the column at the first Parse (its named
  // statement is refused with 42883 at every run once the column is text, on a direct connection
  // too, since that error is not one postgres.js prepares again after: compared, not checked).
  const queries = {
    plain: (sql) => sql`SELECT a FROM ${sql(tbl)}`,
    param: (sql) => sql`SELECT a FROM ${sql(tbl)} WHERE a::text = ${'1000'}`,
    typed: (sql) => sql`SELECT a FROM ${sql(tbl)} WHERE a = ${'1000'}`,
  }
  const trace = []
  let runs = 0
  async function runAll(after, want) {
    for (let i = 0; i < 3; i++) {
      for (const [name, query] of Object.entries(queries)) {
        step = `prepare: ${prepare}: ${name} after ${after}, run ${i + 1}`
        const d = await outcome(query(direct))
        const m = await outcome(query(mux))
        trace.push(`${after} / ${name} ${i + 1}: direct ${d}; pgmux ${m}`)
        const seq = `\nthe sequence so far:\n  ${trace.join('\n  ')}`
        if (code(d) !== code(m)) throw new Error(`${step}: direct ${d}, pgmux ${m}${seq}`)
        // A direct connection gets every value as its column is now for these two; so must pgmux.
        if (name !== 'typed' && m !== want) throw new Error(`${step}: got ${m}, want ${want}${seq}`)
        runs++
      }
    }
  }

  await runAll('the start', 'number 1000 (oid 23)')
  const steps = [
    [other, 'through pgmux', 'ALTER COLUMN a TYPE text', 'string 1000 (oid 25)'],
    [admin, 'straight on PostgreSQL', 'ALTER COLUMN a TYPE bigint USING a::bigint', 'bigint 1000 (oid 20)'],
    [other, 'through pgmux', 'ALTER COLUMN a TYPE numeric', 'string 1000 (oid 1700)'],
    [admin, 'straight on PostgreSQL', 'ALTER COLUMN a TYPE text', 'string 1000 (oid 25)'],
  ]
  for (const [who, where, alter, want] of steps) {
    step = `prepare: ${prepare}: ${alter} ${where}`
    await who.unsafe(`ALTER TABLE ${tbl} ${alter}`)
    await runAll(`${alter} ${where}`, want)
  }
  const errors = (who) => trace.filter((t) => t.split(`; `)[who === 'direct' ? 0 : 1].includes(' error ')).length
  // PGMUX_DRIVER_TRACE=1: every step's answers on stderr.
  if (process.env.PGMUX_DRIVER_TRACE) console.error(`prepare: ${prepare}:\n  ${trace.join('\n  ')}`)
  const summary = { runs, errorsDirect: errors('direct'), errorsMux: errors('mux'), steps: steps.length }
  for (const c of [mux, direct, other, admin]) await c.end({ timeout: 5 })
  return summary
}

async function main() {
  const named = await pass(true, table)
  const unnamed = await pass(false, `${table}_unnamed`)
  console.log(`ok postgres.js: ${named.steps} type changes, every value as its column's type; ` +
    `prepare: true: ${named.runs} runs, ${named.errorsMux} error(s) through pgmux as ${named.errorsDirect} direct; ` +
    `prepare: false: ${unnamed.runs} runs, ${unnamed.errorsMux} error(s) through pgmux as ${unnamed.errorsDirect} direct`)
}

main().then(() => process.exit(0), (e) => {
  const where = e.message.startsWith(step) ? '' : ` at ${step}`
  console.error(`postgres_js_types failed${where}: ${e.message}`)
  process.exit(1)
})
