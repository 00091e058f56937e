// node-postgres (pg 8) through pgmux while migrations are made straight on PostgreSQL.
//
// 1. Its parameterised queries, which it sends as the unnamed statement (Parse ""/Bind/Describe/
//    Execute/Sync, served from pgmux's cache of unnamed statements): after each migration every
//    run returns the table's rows and columns as they are now, with no error, the same as the
//    same query on a direct connection (docs/COMPATIBILITY.md, session 22).
// 2. Its named statements ({name, text, values}: prepared once per connection, then only bound):
//    the same sequence of runs and migrations on a connection through pgmux and on a direct one
//    gets the same answer at every step, the same SQLSTATE where PostgreSQL refuses the old
//    statement (0A000 cached plan must not change result type: at every run once its columns
//    changed, since node-postgres never prepares a name again) and the same rows where not;
//    then the same text under a new name, and the old name on a new connection, get the rows
//    as they are now on both.
// 3. A pg.Pool of 4 through pgmux, 40 queries at once after each of two migrations: every
//    result right, no error.
//
// usage: node node_pg_ddl_behind.js MUX_DSN DIRECT_DSN TABLE   (NODE_PATH: where pg is)

'use strict'

const pg = require('pg')

const [muxDsn, directDsn, table] = process.argv.slice(2)
if (!table) {
  console.error('usage: node node_pg_ddl_behind.js MUX_DSN DIRECT_DSN TABLE')
  process.exit(2)
}

let step = 'connecting'
// A hang fails the script with where it was (the harness kills it at 120 s, without that).
setTimeout(() => {
  console.error(`node_pg_ddl_behind: no answer after 90 s at: ${step}`)
  process.exit(1)
}, 90000).unref()

const show = (x) => JSON.stringify(x)
function check(got, want, what) {
  if (show(got) !== show(want)) throw new Error(`${what}: got ${show(got)}, want ${show(want)}`)
}
// What a query answered, comparable across connections: its columns (name, type oid) and rows.
const answer = (r) => ({ fields: r.fields.map((f) => [f.name, f.dataTypeID]), rows: r.rows })
// The same, or the SQLSTATE of the error it got.
async function outcome(client, query) {
  try {
    return answer(await client.query(query))
  } catch (e) {
    if (!e.code) throw e
    return { error: e.code, message: e.message }
  }
}
const sameOutcome = (a, b) => (a.error || b.error ? a.error === b.error : show(a) === show(b))

async function main() {
  const direct = new pg.Client({ connectionString: directDsn })
  const mux = new pg.Client({ connectionString: muxDsn })
  await direct.connect()
  await mux.connect()

  // 1. The unnamed statement across four migrations.
  step = 'unnamed: setup'
  for (const sql of [`DROP TABLE IF EXISTS ${table}`, `CREATE TABLE ${table} (a int)`,
    `INSERT INTO ${table} VALUES (1)`, `GRANT ALL ON ${table} TO PUBLIC`]) {
    await direct.query(sql)
  }
  // '1' goes as a parameter of unspecified type: PostgreSQL types it from the column.
  const query = { text: `SELECT * FROM ${table} WHERE a = $1`, values: ['1'] }
  for (let i = 0; i < 3; i++) {
    step = `unnamed: before the migrations, run ${i + 1}`
    check(answer(await mux.query(query)), { fields: [['a', 23]], rows: [{ a: 1 }] }, step)
  }
  const migrations = [
    ['ADD COLUMN b int DEFAULT 7', [['a', 23], ['b', 23]], [{ a: 1, b: 7 }]],
    // `a = $1` was typed int at the first Parse: the old statement now fails with 42883.
    ['ALTER COLUMN a TYPE text', [['a', 25], ['b', 23]], [{ a: '1', b: 7 }]],
    ['DROP COLUMN b', [['a', 25]], [{ a: '1' }]],
    // node-postgres reads int8 as a string.
    ['ALTER COLUMN a TYPE bigint USING a::bigint', [['a', 20]], [{ a: '1' }]],
  ]
  let runs = 0
  for (const [alter, fields, rows] of migrations) {
    await direct.query(`ALTER TABLE ${table} ${alter}`)
    for (let i = 0; i < 3; i++) {
      step = `unnamed: after ${alter} (straight on PostgreSQL), run ${i + 1}`
      let got
      try {
        got = answer(await mux.query(query))
      } catch (e) {
        throw new Error(`${step}: pgmux gave ${e.code} ${e.message}; a direct connection gives the rows`)
      }
      check(answer(await direct.query(query)), { fields, rows }, `${step}, direct connection`)
      check(got, { fields, rows }, `${step}, through pgmux`)
      runs++
    }
  }

  // 2. Named statements: the same sequence on a direct connection and through pgmux.
  step = 'named: setup'
  const named = `${table}_named`
  for (const sql of [`DROP TABLE IF EXISTS ${named}`, `CREATE TABLE ${named} (a int)`,
    `INSERT INTO ${named} VALUES (1)`, `GRANT ALL ON ${named} TO PUBLIC`]) {
    await direct.query(sql)
  }
  const namedDirect = new pg.Client({ connectionString: directDsn })
  const namedMux = new pg.Client({ connectionString: muxDsn })
  await namedDirect.connect()
  await namedMux.connect()
  const q1 = { name: 'q1', text: `SELECT * FROM ${named}`, values: [] }
  const sequence = ['run', 'run',
    'ALTER COLUMN a TYPE text', 'run', 'run', 'run',
    'ADD COLUMN b int DEFAULT 7', 'run', 'run', 'run',
    'ALTER COLUMN a TYPE bigint USING a::bigint', 'run', 'run', 'run']
  const trace = []
  const errors = { direct: 0, mux: 0 }
  for (const [i, what] of sequence.entries()) {
    if (what !== 'run') {
      await direct.query(`ALTER TABLE ${named} ${what}`)
      trace.push(what)
      continue
    }
    step = `named: step ${i + 1} (${trace.slice(-1)[0] || 'before the migrations'})`
    const d = await outcome(namedDirect, q1)
    const m = await outcome(namedMux, q1)
    trace.push(`run: direct ${d.error || show(d.rows)}, pgmux ${m.error || show(m.rows)}`)
    if (d.error) errors.direct++
    if (m.error) errors.mux++
    if (!sameOutcome(d, m)) {
      throw new Error(`${step}: direct ${show(d)}, pgmux ${show(m)}; the sequence so far:\n  ${trace.join('\n  ')}`)
    }
  }
  // PostgreSQL keeps refusing the old statement (node-postgres does not prepare it again): the
  // way out is a new name, or a new connection, whose Parse of the same text must get the
  // columns as they are now (through pgmux too: not the statement it already holds for it).
  const now = { fields: [['a', 20], ['b', 23]], rows: [{ a: '1', b: 7 }] }
  const tail = `(the sequence: ${trace.join('; ')})`
  const q2 = { ...q1, name: 'q2' }
  step = 'named: the same text under a new name'
  check(await outcome(namedDirect, q2), now, `${step}, direct connection ${tail}`)
  check(await outcome(namedMux, q2), now, `${step}, through pgmux ${tail}`)
  step = 'named: the old name on a new connection'
  for (const [who, dsn] of [['direct connection', directDsn], ['through pgmux', muxDsn]]) {
    const fresh = new pg.Client({ connectionString: dsn })
    await fresh.connect()
    check(await outcome(fresh, q1), now, `${step}, ${who} ${tail}`)
    await fresh.end()
  }
  await namedDirect.end()
  await namedMux.end()

  // 3. Four clients at once through pgmux, 40 queries after each of two migrations.
  step = 'pool: setup'
  const pooled = `${table}_pool`
  for (const sql of [`DROP TABLE IF EXISTS ${pooled}`, `CREATE TABLE ${pooled} (a int, b text)`,
    `INSERT INTO ${pooled} SELECT i, 'v' || i FROM generate_series(1, 8) i`, `GRANT ALL ON ${pooled} TO PUBLIC`]) {
    await direct.query(sql)
  }
  const pool = new pg.Pool({ connectionString: muxDsn, max: 4 })
  const poolQuery = (i) => ({ text: `SELECT * FROM ${pooled} WHERE a = $1`, values: [String((i % 8) + 1)] })
  let pooledRuns = 0
  for (const alter of [null, 'ADD COLUMN c int DEFAULT 5', 'ALTER COLUMN a TYPE text']) {
    if (alter) await direct.query(`ALTER TABLE ${pooled} ${alter}`)
    step = `pool: 40 queries at once after ${alter || 'no migration'}`
    const want = []
    for (let i = 0; i < 8; i++) want.push(answer(await direct.query(poolQuery(i))))
    const got = await Promise.all(Array.from({ length: 40 }, (_, i) =>
      pool.query(poolQuery(i)).then(answer, (e) => ({ error: e.code, message: e.message }))))
    const wrong = got.map((g, i) => [i, g]).filter(([i, g]) => show(g) !== show(want[i % 8]))
    if (wrong.length) {
      throw new Error(`${step}: ${wrong.length} of 40 wrong, e.g. query ${wrong[0][0]}: got ${show(wrong[0][1])}, want ${show(want[wrong[0][0] % 8])}`)
    }
    pooledRuns += got.length
  }
  await pool.end()

  await mux.end()
  await direct.end()
  console.log(`ok node-postgres: ${runs} runs across ${migrations.length} migrations, no error; ` +
    `named statements: ${errors.mux} refusal(s) through pgmux, ${errors.direct} direct, step for step the same; ` +
    `${pooledRuns} pooled queries at once across 2 migrations, all right`)
}

main().then(() => process.exit(0), (e) => {
  const where = e.message.startsWith(step) ? '' : ` at ${step}`
  console.error(`node_pg_ddl_behind failed${where}: ${e.message}`)
  process.exit(1)
})
