package com.github.tenantplane.opensearchnode;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Runs a real, single-node OpenSearch server in this JVM for the search tests.
 *
 * <p>The node is the regular {@link Node} with two classpath plugins: transport-netty4 (HTTP and
 * transport layers) and analysis-common (edge_ngram and the other common analyzers). It listens on
 * 127.0.0.1 only, speaks plain HTTP without authentication, and is closed cleanly on SIGTERM.
 *
 * <p>Usage: {@code OpenSearchNode --home DIR [--http-port N] [--transport-port N] [--url-file F]
 * [--pid-file F] [--cluster-name NAME] [--node-name NAME]}. A port of 0 (the default) picks a free
 * loopback port; a given port that is already taken is replaced by a free one too. Once the node
 * accepts requests its URL ({@code http://127.0.0.1:PORT}) is written to the URL file.
 */
public final class OpenSearchNode {

    /** Plugins loaded from the classpath, as the server distribution would load its modules. */
    private static final List<Class<? extends Plugin>> PLUGINS = List.of(Netty4Plugin.class, CommonAnalysisPlugin.class);

    private static final String LOG4J2_PROPERTIES = String.join(
        "\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.target = SYSTEM_OUT",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n",
        "rootLogger.level = warn",
        "rootLogger.appenderRef.console.ref = console",
        "# start-up and shut-down milestones",
        "logger.node.name = org.opensearch.node.Node",
        "logger.node.level = info",
        ""
    );

    /** {@link Node} exposes the constructor taking classpath plugins to subclasses only. */
    private static final class PluginNode extends Node {
        PluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    private OpenSearchNode() {}

    public static void main(String[] args) throws Exception {
        // Must be set before log4j initialises: the shutdown hook below stops logging itself, after the node is closed.
        System.setProperty("log4j.shutdownHookEnabled", "false");
        System.setProperty("log4j2.disable.jmx", "true");

        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("opensearch-node: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(2);
            return;
        }

        Path home = options.home.toAbsolutePath().normalize();
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.writeString(config.resolve("log4j2.properties"), LOG4J2_PROPERTIES, StandardCharsets.UTF_8);
        if (options.pidFile != null) {
            writeAtomically(options.pidFile, ProcessHandle.current().pid() + "\n");
        }

        int httpPort = choosePort(options.httpPort, -1);
        int transportPort = choosePort(options.transportPort, httpPort);

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", options.clusterName)
            .put("node.name", options.nodeName)
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A nearly full disk must never turn the test indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), config, () -> options.nodeName);
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(options.nodeName);
        LogConfigurator.configure(environment);

        Node node = new PluginNode(environment, PLUGINS);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (node.awaitClose(15, TimeUnit.SECONDS) == false) {
                    System.err.println("opensearch-node: node did not close within 15s");
                }
            } catch (IOException | InterruptedException | RuntimeException e) {
                System.err.println("opensearch-node: error while closing the node: " + e);
            } finally {
                LoggerContext context = (LoggerContext) LogManager.getContext(false);
                Configurator.shutdown(context);
                closed.countDown();
            }
        }, "opensearch-node-shutdown"));

        try {
            node.start();
        } catch (Exception e) {
            System.err.println("opensearch-node: failed to start the node");
            e.printStackTrace();
            System.exit(1); // runs the shutdown hook, which closes what was started
            return;
        }

        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        String url = "http://127.0.0.1:" + bound.getPort();
        if (options.urlFile != null) {
            writeAtomically(options.urlFile, url + "\n");
        }
        System.out.println("opensearch-node: listening on " + url);
        System.out.flush();

        closed.await();
    }

    /**
     * Returns {@code preferred} if it can be bound on loopback right now, otherwise a free port
     * chosen by the OS (never {@code exclude}).
     */
    private static int choosePort(int preferred, int exclude) throws IOException {
        InetAddress loopback = InetAddress.getByName("127.0.0.1");
        if (preferred > 0 && preferred != exclude && canBind(loopback, preferred)) {
            return preferred;
        }
        for (int attempt = 0; attempt < 20; attempt++) {
            try (ServerSocket socket = new ServerSocket()) {
                socket.setReuseAddress(true);
                socket.bind(new InetSocketAddress(loopback, 0));
                int port = socket.getLocalPort();
                if (port != exclude) {
                    return port;
                }
            }
        }
        throw new IOException("could not find a free loopback port");
    }

    private static boolean canBind(InetAddress address, int port) {
        try (ServerSocket socket = new ServerSocket()) {
            socket.setReuseAddress(true);
            socket.bind(new InetSocketAddress(address, port));
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static void writeAtomically(Path file, String content) throws IOException {
        Path target = file.toAbsolutePath();
        Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        Files.writeString(tmp, content, StandardCharsets.UTF_8);
        Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static final class Options {
        static final String USAGE = "usage: OpenSearchNode --home DIR [--http-port N] [--transport-port N] [--url-file FILE] "
            + "[--pid-file FILE] [--cluster-name NAME] [--node-name NAME]";

        Path home;
        int httpPort;
        int transportPort;
        Path urlFile;
        Path pidFile;
        String clusterName = "tenantplane-test";
        String nodeName = "tenantplane-test-node";

        static Options parse(String[] args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("missing value for " + flag);
                }
                String value = args[++i];
                switch (flag) {
                    case "--home":
                        o.home = Paths.get(value);
                        break;
                    case "--http-port":
                        o.httpPort = port(flag, value);
                        break;
                    case "--transport-port":
                        o.transportPort = port(flag, value);
                        break;
                    case "--url-file":
                        o.urlFile = Paths.get(value);
                        break;
                    case "--pid-file":
                        o.pidFile = Paths.get(value);
                        break;
                    case "--cluster-name":
                        o.clusterName = value;
                        break;
                    case "--node-name":
                        o.nodeName = value;
                        break;
                    default:
                        throw new IllegalArgumentException("unknown option " + flag);
                }
            }
            if (o.home == null) {
                throw new IllegalArgumentException("--home is required");
            }
            return o;
        }

        private static int port(String flag, String value) {
            try {
                int port = Integer.parseInt(value);
                if (port < 0 || port > 65535) {
                    throw new NumberFormatException();
                }
                return port;
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(flag + " must be a port number (0 = any free port), got " + value);
            }
        }
    }
}
