// WeirFlinkBench: runs one benchmark on Flink in this JVM (local mini cluster, parallelism 1,
// RocksDB state backend, incremental checkpoints every 10 s) and prints its wall time.
//
//   java -cp "<flink lib>/*:<classes>" WeirFlinkBench --sql q1.sql --input in.jsonl \
//       --out DIR --checkpoints DIR [--process splice|effective-click]
//
// The SQL script's statements end with ';' at the end of a line; ${INPUT} and ${OUT} are
// replaced by --input and --out. Without --process every INSERT runs as one job. With
// --process the script defines a source table `events` and a sink table `results`, and the
// driver runs the named keyed process function (the DataStream equivalent of Weir's
// operator) between them.

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.TimerService;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.table.api.StatementSet;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

public class WeirFlinkBench {

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            opt.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        for (String required : new String[] {"sql", "input", "out", "checkpoints"}) {
            if (!opt.containsKey(required)) {
                System.err.println("WeirFlinkBench: missing --" + required);
                System.exit(2);
            }
        }
        Map<String, String> conf = new HashMap<>();
        conf.put("parallelism.default", "1");
        conf.put("execution.runtime-mode", "STREAMING");
        conf.put("state.backend.type", "rocksdb");
        conf.put("execution.checkpointing.incremental", "true");
        conf.put("execution.checkpointing.interval", "10s");
        conf.put("execution.checkpointing.dir", "file://" + Path.of(opt.get("checkpoints")).toAbsolutePath());
        conf.put("execution.checkpointing.num-retained", "3");
        conf.put("table.exec.resource.default-parallelism", "1");
        conf.put("table.local-time-zone", "UTC");
        // Latency markers every second, histograms logged by the slf4j reporter every 5 s: bench.py
        // reads the p99 of the source -> sink-operator latency from the log.
        conf.put("metrics.latency.interval", "1000");
        conf.put("metrics.reporter.slf4j.factory.class", "org.apache.flink.metrics.slf4j.Slf4jReporterFactory");
        conf.put("metrics.reporter.slf4j.interval", "5 s");
        StreamExecutionEnvironment env =
                StreamExecutionEnvironment.getExecutionEnvironment(Configuration.fromMap(conf));
        env.setParallelism(1);
        StreamTableEnvironment tEnv = StreamTableEnvironment.create(env);

        String script = Files.readString(Path.of(opt.get("sql")))
                .replace("${INPUT}", Path.of(opt.get("input")).toAbsolutePath().toString())
                .replace("${OUT}", Path.of(opt.get("out")).toAbsolutePath().toString());
        List<String> inserts = new ArrayList<>();
        for (String stmt : script.split(";\\s*\\n")) {
            String s = stripComments(stmt).trim();
            if (s.isEmpty()) {
                continue;
            }
            if (s.toUpperCase().startsWith("INSERT")) {
                inserts.add(s);
            } else {
                tEnv.executeSql(s);
            }
        }

        // CPU of the whole JVM before the job is submitted (JVM start, planning of the DDL):
        // bench.py reports it next to the whole-process figure.
        double cpuBefore = processCpuSeconds();
        long started = System.nanoTime();
        String process = opt.get("process");
        if (process == null) {
            StatementSet set = tEnv.createStatementSet();
            for (String s : inserts) {
                set.addInsertSql(s);
            }
            set.execute().await();
        } else {
            DataStream<Row> events = tEnv.toDataStream(tEnv.from("events"));
            DataStream<Row> results;
            switch (process) {
                case "splice":
                    results = events.keyBy(r -> (String) r.getField("requestId"))
                            .process(new Splice())
                            .returns(Splice.TYPE);
                    break;
                case "effective-click":
                    results = events.keyBy(r -> (String) r.getField("requestId"))
                            .process(new EffectiveClick())
                            .returns(EffectiveClick.TYPE);
                    break;
                default:
                    throw new IllegalArgumentException("unknown --process " + process);
            }
            Table table = tEnv.fromDataStream(results);
            table.insertInto("results").execute().await();
        }
        double secs = (System.nanoTime() - started) / 1e9;
        System.out.printf("flink: job finished in %.3f s; process cpu before submit %.3f s, at end %.3f s%n",
                secs, cpuBefore, processCpuSeconds());
    }

    private static double processCpuSeconds() {
        java.lang.management.OperatingSystemMXBean os =
                java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime() / 1e9;
        }
        return -1;
    }

    private static String stripComments(String stmt) {
        StringBuilder b = new StringBuilder();
        for (String line : stmt.split("\n")) {
            if (!line.trim().startsWith("--")) {
                b.append(line).append('\n');
            }
        }
        return b.toString();
    }

    /** One buffered input event (the fields the two process functions need). */
    public static class Ev {
        public String type;
        public String adId;
        public long ts;
        public Long playMs;

        public Ev() {}

        static Ev of(Row r) {
            Ev e = new Ev();
            e.type = (String) r.getField("type");
            e.adId = (String) r.getField("adId");
            e.ts = (Long) r.getField("ts");
            e.playMs = (Long) r.getField("playMs");
            return e;
        }
    }

    /** The per-request sample of {@link Splice}. A POJO, so RocksDB state can serialise it. */
    public static class SpliceAcc {
        public long bound;
        public long firstSeen;
        public long lastSeen;
        public long impressions;
        public long clicks;
        public long heartbeats;
        public List<String> impressedAds = new ArrayList<>();
        public Long watchedMs;
        public long watchedTs = Long.MIN_VALUE;
        public long heartbeatMsTotal;

        public SpliceAcc() {}
    }

    /**
     * Weir's `splice` operator (examples/splice.yaml, runtime/src/operator/workload/splice.rs):
     * a sample per request merges impressions, clicks and heartbeats with
     * `ts <= first.ts + 30 s`; an event-time timer at `first.ts + 30 s` emits it. Records with a
     * later timestamp that arrive before the timer fires are held and start the next sample.
     */
    public static class Splice extends KeyedProcessFunction<String, Row, Row> {
        static final long TIMEOUT = 30_000;
        static final TypeInformation<Row> TYPE = Types.ROW_NAMED(
                new String[] {"requestId", "firstSeen", "lastSeen", "impressions", "clicks",
                    "heartbeats", "impressedAds", "watchedMs", "heartbeatMsTotal"},
                Types.STRING, Types.LONG, Types.LONG, Types.LONG, Types.LONG, Types.LONG,
                Types.OBJECT_ARRAY(Types.STRING), Types.LONG, Types.LONG);
        private transient ValueState<SpliceAcc> acc;
        private transient ListState<Ev> held;

        @Override
        public void open(OpenContext ctx) {
            acc = getRuntimeContext().getState(new ValueStateDescriptor<>("sample", SpliceAcc.class));
            held = getRuntimeContext().getListState(new ListStateDescriptor<>("held", Ev.class));
        }

        /** Merges `e` into the current sample (opening one), or holds it for the next. */
        private void add(Ev e, SpliceAcc a, TimerService timers) throws Exception {
            if (e.ts > a.bound) {
                held.add(e);
                return;
            }
            a.firstSeen = Math.min(a.firstSeen, e.ts);
            a.lastSeen = Math.max(a.lastSeen, e.ts);
            switch (e.type) {
                case "impression":
                    a.impressions++;
                    a.impressedAds.add(e.adId);
                    break;
                case "click":
                    a.clicks++;
                    break;
                case "heartbeat":
                    a.heartbeats++;
                    if (e.playMs != null) {
                        if (e.ts >= a.watchedTs) {
                            a.watchedTs = e.ts;
                            a.watchedMs = e.playMs;
                        }
                        a.heartbeatMsTotal += e.playMs;
                    }
                    break;
                default:
                    break;
            }
        }

        private SpliceAcc start(Ev first, TimerService timers) {
            SpliceAcc a = new SpliceAcc();
            a.firstSeen = first.ts;
            a.lastSeen = first.ts;
            a.bound = first.ts + TIMEOUT;
            timers.registerEventTimeTimer(first.ts + TIMEOUT);
            return a;
        }

        @Override
        public void processElement(Row r, Context ctx, Collector<Row> out) throws Exception {
            Ev e = Ev.of(r);
            SpliceAcc a = acc.value();
            if (a == null) {
                a = start(e, ctx.timerService());
            }
            add(e, a, ctx.timerService());
            acc.update(a);
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
            SpliceAcc a = acc.value();
            if (a == null) {
                return;
            }
            out.collect(Row.of(ctx.getCurrentKey(), a.firstSeen, a.lastSeen, a.impressions,
                    a.clicks, a.heartbeats, a.impressedAds.toArray(new String[0]), a.watchedMs,
                    a.heartbeatMsTotal));
            acc.clear();
            List<Ev> next = new ArrayList<>();
            for (Ev e : held.get()) {
                next.add(e);
            }
            held.clear();
            if (next.isEmpty()) {
                return;
            }
            SpliceAcc b = start(next.get(0), ctx.timerService());
            for (Ev e : next) {
                add(e, b, ctx.timerService());
            }
            acc.update(b);
        }
    }

    /** The per-click session of {@link EffectiveClick}. */
    public static class ClickSession {
        public String adId;
        public long clickTs;
        public long heartbeats;
        public long lastHeartbeat = Long.MIN_VALUE;
        public boolean emitted;

        public ClickSession() {}
    }

    /**
     * Weir's `accumulate` operator (examples/effective-click.yaml,
     * runtime/src/operator/workload/accumulate.rs): records are buffered until the watermark
     * passes them and handled in (ts, click before heartbeat, arrival) order; a click opens a
     * session (one per request at a time), heartbeats with `clickTs <= ts <= clickTs + 3 h`
     * are counted, one output when the 120th arrives; the session ends 3 h after the click.
     */
    public static class EffectiveClick extends KeyedProcessFunction<String, Row, Row> {
        static final long TTL = 3 * 3600 * 1000L;
        static final TypeInformation<Row> TYPE = Types.ROW_NAMED(
                new String[] {"requestId", "adId", "clickTs", "heartbeats", "watchedUntil"},
                Types.STRING, Types.STRING, Types.LONG, Types.LONG, Types.LONG);
        private transient ValueState<ClickSession> session;
        private transient MapState<Long, List<Ev>> buffer;

        @Override
        public void open(OpenContext ctx) {
            session = getRuntimeContext().getState(new ValueStateDescriptor<>("session", ClickSession.class));
            buffer = getRuntimeContext().getMapState(new MapStateDescriptor<>("buffer",
                    Types.LONG, Types.LIST(Types.POJO(Ev.class))));
        }

        @Override
        public void processElement(Row r, Context ctx, Collector<Row> out) throws Exception {
            Ev e = Ev.of(r);
            if (!"click".equals(e.type) && !"heartbeat".equals(e.type)) {
                return; // Weir's pipeline filters its two inputs to clicks and heartbeats
            }
            if (e.ts <= ctx.timerService().currentWatermark()) {
                handle(e, ctx.getCurrentKey(), ctx.timerService(), out);
                return;
            }
            List<Ev> at = buffer.get(e.ts);
            if (at == null) {
                at = new ArrayList<>();
                ctx.timerService().registerEventTimeTimer(e.ts);
            }
            at.add(e);
            buffer.put(e.ts, at);
        }

        private void handle(Ev e, String key, TimerService timers, Collector<Row> out) throws Exception {
            ClickSession s = session.value();
            if ("click".equals(e.type)) {
                if (s == null) {
                    s = new ClickSession();
                    s.adId = e.adId;
                    s.clickTs = e.ts;
                    timers.registerEventTimeTimer(e.ts + TTL);
                    session.update(s);
                }
                return;
            }
            if (s == null || s.emitted || e.ts < s.clickTs || e.ts > s.clickTs + TTL) {
                return;
            }
            s.heartbeats++;
            s.lastHeartbeat = Math.max(s.lastHeartbeat, e.ts);
            if (s.heartbeats >= 120) {
                out.collect(Row.of(key, s.adId, s.clickTs, s.heartbeats, s.lastHeartbeat));
                s.emitted = true;
            }
            session.update(s);
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
            List<Ev> at = buffer.get(timestamp);
            if (at != null) {
                buffer.remove(timestamp);
                List<Ev> ordered = new ArrayList<>();
                for (Ev e : at) {
                    if ("click".equals(e.type)) {
                        ordered.add(e);
                    }
                }
                for (Ev e : at) {
                    if (!"click".equals(e.type)) {
                        ordered.add(e);
                    }
                }
                for (Ev e : ordered) {
                    handle(e, ctx.getCurrentKey(), ctx.timerService(), out);
                }
            }
            ClickSession s = session.value();
            if (s != null && timestamp >= s.clickTs + TTL) {
                session.clear();
            }
        }
    }
}
