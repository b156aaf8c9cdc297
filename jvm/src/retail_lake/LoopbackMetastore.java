/*
 * retail-lake: a Hive metastore bound to one address (setup_cluster.sh metastore start).
 *
 * Hive 2.3's own `HiveMetaStore -p PORT` (the one pyspark's jars ship) listens on every
 * interface and has no setting to bind it. This starts the same metastore service (Hive's
 * HMSHandler behind its Thrift processor, binary protocol, no SASL, as `HiveMetaStore`
 * serves it without Kerberos) on a server socket bound to the address given, by default
 * loopback only.
 *
 *   java -cp "CONF_DIR:<pyspark>/jars/*:<this jar>" retail_lake.LoopbackMetastore HOST PORT
 *
 * CONF_DIR holds the hive-site.xml (the backing database, warehouse folder, schema
 * creation) that setup_cluster.sh writes. The line "metastore listening on HOST:PORT" is
 * printed once the socket accepts connections; the handler (and its database schema) is
 * made before that, so a client is answered at once.
 */
package retail_lake;

import java.net.InetAddress;
import java.net.InetSocketAddress;

import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.TSetIpAddressProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TServer;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;

public final class LoopbackMetastore {
  private LoopbackMetastore() {}

  public static void main(String[] args) throws Throwable {
    if (args.length != 2) {
      System.err.println("usage: LoopbackMetastore HOST PORT");
      System.exit(2);
    }
    InetAddress host = InetAddress.getByName(args[0]);
    int port = Integer.parseInt(args[1]);
    HiveConf conf = new HiveConf(HiveMetaStore.HMSHandler.class);
    IHMSHandler base = new HiveMetaStore.HMSHandler("retail-lake metastore", conf, false);
    IHMSHandler handler = HiveMetaStore.newRetryingHMSHandler(base, conf, false);
    TServerSocket socket = new TServerSocket(new InetSocketAddress(host, port));
    TThreadPoolServer.Args serverArgs =
        new TThreadPoolServer.Args(socket)
            .processor(new TSetIpAddressProcessor<>(handler))
            .transportFactory(new TTransportFactory())
            .protocolFactory(new TBinaryProtocol.Factory())
            .inputProtocolFactory(new TBinaryProtocol.Factory())
            .minWorkerThreads(conf.getIntVar(HiveConf.ConfVars.METASTORESERVERMINTHREADS))
            .maxWorkerThreads(conf.getIntVar(HiveConf.ConfVars.METASTORESERVERMAXTHREADS));
    TServer server = new TThreadPoolServer(serverArgs);
    Runtime.getRuntime().addShutdownHook(new Thread(server::stop));
    System.err.println("metastore listening on " + host.getHostAddress() + ":" + port);
    System.err.flush();
    server.serve();
  }
}
