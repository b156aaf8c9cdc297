/*
 * retail-lake: the SQL endpoint's read-only guard (setup_cluster.sh sql-server).
 *
 * A Spark SQL extension whose check rule refuses every plan that holds a command other than
 * an allow-list of commands that only read (SHOW, DESCRIBE, EXPLAIN, ...) or only change the
 * caller's own session (SET, USE, a temporary view): INSERT, DELETE, MERGE, DROP, CREATE,
 * ALTER, OPTIMIZE, VACUUM, RESTORE and a DataFrame write all fail before anything runs, with
 *
 *   read-only endpoint: DropTable would change the lake; restart the endpoint with --allow-writes
 *
 * Check rules run on every analyzed plan, whichever client sent it (JDBC through the Thrift
 * server, Spark Connect, the driver itself), and before a command executes.
 *
 * Settings, read once per session from the SparkContext's SparkConf: static, so that a
 * client's SET cannot change them.
 *   spark.retail_lake.sql.allow_writes       true: the guard lets everything through (false)
 *   spark.retail_lake.sql.read_only_commands comma-separated simple class names of the commands
 *                                            allowed (lib/retail_lake/sql_endpoint.py sets it);
 *                                            unset: no command at all, queries only
 *
 * Use:
 *   --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension,retail_lake.ReadOnlySql
 * with this class's jar on the driver's class path. The endpoint registers the lake's tables
 * in a session it exempts first (exempt(SparkSession)); a JDBC or Connect client cannot name a
 * session object, so it cannot exempt its own.
 */
package retail_lake;

import java.util.ArrayDeque;
import java.util.Collections;
import java.util.Deque;
import java.util.HashSet;
import java.util.Set;
import java.util.WeakHashMap;

import org.apache.spark.QueryContext;
import org.apache.spark.SparkConf;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.analysis.LocalTempView$;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.command.CreateViewCommand;

import scala.Function1;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

public final class ReadOnlySql extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {

  public static final String ALLOW_WRITES = "spark.retail_lake.sql.allow_writes";
  public static final String READ_ONLY_COMMANDS = "spark.retail_lake.sql.read_only_commands";

  // Sessions whose plans are not checked: the endpoint's own registration session. Weak keys:
  // a session that is gone is forgotten.
  private static final Set<SparkSession> EXEMPT =
      Collections.synchronizedSet(Collections.newSetFromMap(new WeakHashMap<>()));

  /** Lets `session`'s plans through (the endpoint registering the lake's tables). */
  public static void exempt(SparkSession session) {
    EXEMPT.add(session);
  }

  /** Checks `session`'s plans again. */
  public static void unexempt(SparkSession session) {
    EXEMPT.remove(session);
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectCheckRule(new GuardBuilder());
    return BoxedUnit.UNIT;
  }

  /** Spark calls this once per session (its state), with the session. */
  static final class GuardBuilder
      extends AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>> {
    @Override
    public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
      SparkConf conf = session.sparkContext().getConf();
      Set<String> allowed = new HashSet<>();
      for (String name : conf.get(READ_ONLY_COMMANDS, "").split(",")) {
        if (!name.isBlank()) {
          allowed.add(name.strip());
        }
      }
      return new Guard(session, conf.getBoolean(ALLOW_WRITES, false), allowed);
    }
  }

  static final class Guard extends AbstractFunction1<LogicalPlan, BoxedUnit> {
    private final SparkSession session;
    private final boolean allowWrites;
    private final Set<String> allowed;

    Guard(SparkSession session, boolean allowWrites, Set<String> allowed) {
      this.session = session;
      this.allowWrites = allowWrites;
      this.allowed = allowed;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
      if (allowWrites || EXEMPT.contains(session)) {
        return BoxedUnit.UNIT;
      }
      // Every node, not only the root: a write can sit under a node that is not a command
      // (a CTE's WithCTE, a multi-insert's union).
      Deque<LogicalPlan> stack = new ArrayDeque<>();
      stack.push(plan);
      while (!stack.isEmpty()) {
        LogicalPlan node = stack.pop();
        if (node instanceof Command && !readOnly(node)) {
          throw ReadOnlySql.<RuntimeException>unchecked(refusal(describe(node)));
        }
        for (LogicalPlan child : CollectionConverters.asJava(node.children())) {
          stack.push(child);
        }
      }
      return BoxedUnit.UNIT;
    }

    private boolean readOnly(LogicalPlan command) {
      if (command instanceof CreateViewCommand) {
        // A temporary view lives in the caller's session only; a persistent one is a table.
        return ((CreateViewCommand) command).viewType() == LocalTempView$.MODULE$
            && allowed.contains("CreateViewCommand");
      }
      return allowed.contains(kind(command));
    }
  }

  /** The command's name in the refusal: a view says which kind (PersistedView, GlobalTempView). */
  static String describe(LogicalPlan command) {
    if (command instanceof CreateViewCommand) {
      String type = ((CreateViewCommand) command).viewType().getClass().getSimpleName();
      return kind(command) + " (" + type.replace("$", "") + ")";
    }
    return kind(command);
  }

  static String kind(LogicalPlan node) {
    String name = node.getClass().getSimpleName();
    return name.endsWith("$") ? name.substring(0, name.length() - 1) : name;
  }

  // AnalysisException is a checked exception to javac, and Function1.apply declares none: it
  // is thrown as it is (clients see an AnalysisException), javac told it is unchecked.
  @SuppressWarnings("unchecked")
  static <E extends Throwable> E unchecked(Throwable error) throws E {
    throw (E) error;
  }

  static AnalysisException refusal(String kind) {
    String message =
        "read-only endpoint: "
            + kind
            + " would change the lake; restart the endpoint with --allow-writes"
            + " (setup_cluster.sh sql-server start --allow-writes)";
    return new AnalysisException(
        message,
        Option.empty(),
        Option.empty(),
        Option.empty(),
        Option.empty(),
        scala.collection.immutable.Map$.MODULE$.<String, String>empty(),
        new QueryContext[0]);
  }
}
