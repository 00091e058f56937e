// PgJDBC (Debian's libpostgresql-jdbc-java) through pgmux in transaction mode (and session mode),
// as Java services run behind PgBouncer: several connections sharing the pool's servers, each with server-side
// prepared statements (prepareThreshold=1, so JDBC names them S_1, S_2, ... on every
// connection alike), batches, transactions with savepoints, a cursor read with a fetch size,
// more statements than max_prepared_statements, values of several types, and a query canceled
// by setQueryTimeout. Run as a
// single-file program: java -cp postgresql.jar jdbc_transaction_mode.java <dsn> <direct dsn> <table>
// (the direct dsn is a unix socket, which PgJDBC does not reach: unused). Prints one `ok jdbc:`
// line, or throws.

import java.math.BigDecimal;
import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

public class jdbc_transaction_mode {
    static final int ROWS = 1000;
    static final int THREADS = 4;
    static final int ROUNDS = 150;

    static URI dsn;
    static String table;

    static Connection connect() throws Exception {
        String[] userInfo = dsn.getUserInfo().split(":", 2);
        Properties p = new Properties();
        p.setProperty("user", userInfo[0]);
        p.setProperty("password", userInfo[1]);
        p.setProperty("prepareThreshold", "1");
        p.setProperty("sslmode", "disable");
        String url = "jdbc:postgresql://" + dsn.getHost() + ":" + dsn.getPort() + dsn.getPath();
        return DriverManager.getConnection(url, p);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /** Inserts ROWS rows in one transaction with executeBatch (Bind/Execute pairs, one Sync). */
    static void load(Connection c) throws Exception {
        try (Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + table);
            s.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, v text, n numeric, b bytea, a int[], hits int NOT NULL DEFAULT 0)");
        }
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + " (id, v, n, b, a) VALUES (?, ?, ?, ?, ?)")) {
            for (int i = 1; i <= ROWS; i++) {
                ps.setInt(1, i);
                ps.setString(2, "row " + i + " é");
                ps.setBigDecimal(3, new BigDecimal(i).movePointLeft(2));
                ps.setBytes(4, new byte[] {(byte) i, 0, (byte) 0xff});
                ps.setArray(5, c.createArrayOf("int4", new Integer[] {i, -i}));
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            check(counts.length == ROWS, "batch counts " + counts.length);
        }
        c.commit();
        c.setAutoCommit(true);
    }

    /** One connection's work: reads and updates through named statements, in and out of transactions. */
    static int work(int me) throws Exception {
        int done = 0;
        try (Connection c = connect();
             PreparedStatement read = c.prepareStatement("SELECT v, n, b, a FROM " + table + " WHERE id = ?");
             PreparedStatement bump = c.prepareStatement("UPDATE " + table + " SET hits = hits + 1 WHERE id = ?")) {
            for (int r = 0; r < ROUNDS; r++) {
                int id = 1 + (me * 7919 + r * 104729) % ROWS;
                read.setInt(1, id);
                try (ResultSet rs = read.executeQuery()) {
                    check(rs.next(), "row " + id);
                    check(rs.getString(1).equals("row " + id + " é"), "v of " + id + ": " + rs.getString(1));
                    check(rs.getBigDecimal(2).compareTo(new BigDecimal(id).movePointLeft(2)) == 0, "n of " + id);
                    check(Arrays.equals(rs.getBytes(3), new byte[] {(byte) id, 0, (byte) 0xff}), "b of " + id);
                    Integer[] a = (Integer[]) rs.getArray(4).getArray();
                    check(a[0] == id && a[1] == -id, "a of " + id);
                }
                // A transaction: JDBC sends its BEGIN in the same batch as the first statement.
                c.setAutoCommit(false);
                bump.setInt(1, id);
                check(bump.executeUpdate() == 1, "update " + id);
                Savepoint sp = c.setSavepoint();
                bump.setInt(1, id);
                bump.executeUpdate();
                c.rollback(sp);
                c.commit();
                c.setAutoCommit(true);
                done++;
            }
            // More distinct statements than max_prepared_statements: servers evict and prepare again.
            for (int k = 0; k < 60; k++) {
                try (PreparedStatement ps = c.prepareStatement("SELECT " + k + " + ?::int AS x")) {
                    for (int t = 0; t < 2; t++) {
                        ps.setInt(1, me);
                        try (ResultSet rs = ps.executeQuery()) {
                            check(rs.next() && rs.getInt(1) == k + me, "statement " + k);
                        }
                    }
                }
            }
        }
        return done;
    }

    public static void main(String[] args) {
        try {
            run(args);
            System.exit(0);
        } catch (Throwable e) {
            // At once, whatever the other connections' threads are doing.
            e.printStackTrace();
            System.exit(1);
        }
    }

    static void run(String[] args) throws Exception {
        dsn = new URI(args[0]);
        table = args[2];
        try (Connection c = connect()) {
            load(c);
        }
        ExecutorService pool = Executors.newFixedThreadPool(THREADS);
        List<Future<Integer>> results = new ArrayList<>();
        for (int i = 0; i < THREADS; i++) {
            final int me = i;
            results.add(pool.submit(() -> work(me)));
        }
        int transactions = 0;
        for (Future<Integer> f : results) {
            transactions += f.get();
        }
        pool.shutdown();
        try (Connection c = connect()) {
            // Every committed bump counted once; the ones rolled back to the savepoint not at all.
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT sum(hits) FROM " + table)) {
                check(rs.next() && rs.getLong(1) == transactions, "hits " + rs.getLong(1) + " of " + transactions);
            }
            // A cursor read: Execute with a row limit, the portal kept open across fetches.
            c.setAutoCommit(false);
            int seen = 0;
            long sum = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT id FROM " + table + " ORDER BY id")) {
                ps.setFetchSize(50);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        seen++;
                        sum += rs.getInt(1);
                    }
                }
            }
            c.commit();
            check(seen == ROWS && sum == (long) ROWS * (ROWS + 1) / 2, "cursor read " + seen + " rows");
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE " + table);
            }
            c.commit();
            c.setAutoCommit(true);
            // setQueryTimeout: PgJDBC's timer sends a CancelRequest on a connection of its own,
            // which pgmux forwards to the server running the query.
            long start = System.nanoTime();
            try (Statement s = c.createStatement()) {
                s.setQueryTimeout(1);
                s.execute("SELECT pg_sleep(20)");
                check(false, "pg_sleep(20) was not canceled");
            } catch (SQLException e) {
                check("57014".equals(e.getSQLState()), "canceled with " + e.getSQLState() + ": " + e.getMessage());
            }
            check(System.nanoTime() - start < 10_000_000_000L, "the cancel took " + (System.nanoTime() - start) / 1_000_000 + " ms");
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT 1")) {
                check(rs.next() && rs.getInt(1) == 1, "the connection goes on after its cancel");
            }
        }
        System.out.println("ok jdbc: " + ROWS + " rows in one batch, " + transactions + " transactions on " + THREADS
            + " connections, a cursor read of " + ROWS + " rows in fetches of 50, a query timeout canceled");
    }
}
