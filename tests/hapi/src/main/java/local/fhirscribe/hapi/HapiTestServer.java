package local.fhirscribe.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.config.JpaConfig;
import ca.uhn.fhir.jpa.interceptor.UserRequestRetryVersionConflictsInterceptor;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

import java.util.Set;

/**
 * Entry point: {@code java -jar hapi-test-server.jar [--port N]} (or env HAPI_PORT, or -Dserver.port=N; default 8090).
 * Serves FHIR R4 at http://127.0.0.1:N/fhir from an in-memory H2 database.
 */
public final class HapiTestServer {
	private static final Logger LOG = LoggerFactory.getLogger(HapiTestServer.class);

	private static final Set<String> UNVALIDATED_TYPES = Set.of("Subscription", "Basic");

	private HapiTestServer() {}

	public static void main(String[] args) {
		long t0 = System.nanoTime();
		try {
			start(port(args), t0).join();
		} catch (Throwable e) {
			// Without this, HAPI's non-daemon scheduler threads would keep a half-started JVM alive.
			LOG.error("HAPI test server failed", e);
			System.exit(1);
		}
	}

	private static Server start(int port, long t0) throws Exception {
		QueuedThreadPool threads = new QueuedThreadPool(64, 4);
		threads.setName("http");
		Server jetty = new Server(threads);
		ServerConnector connector = new ServerConnector(jetty, 1, 1);
		connector.setHost("127.0.0.1");
		connector.setPort(port);
		connector.open(); // bind now: a port clash fails at once, not after the ~10 s Spring start-up
		jetty.addConnector(connector);

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(ServerConfig.class);
		spring.registerShutdownHook();

		// The server keeps its own interceptor service: sharing HAPI's JPA one would fire every storage hook twice
		// (JPA calls both the global and the request's broadcaster), e.g. each subscription delivered twice.
		RestfulServer fhir = new RestfulServer(spring.getBean(FhirContext.class));
		fhir.setDefaultResponseEncoding(EncodingEnum.JSON);
		fhir.registerProviders(spring.getBean("myResourceProvidersR4", ResourceProviderFactory.class).createProviders());
		fhir.registerProvider(spring.getBean("mySystemProviderR4"));
		fhir.setPagingProvider(spring.getBean(DatabaseBackedPagingProvider.class));
		fhir.setServerConformanceProvider(new JpaCapabilityStatementProvider(
				fhir,
				spring.getBean(IFhirSystemDao.class),
				spring.getBean(JpaStorageSettings.class),
				spring.getBean(ISearchParamRegistry.class),
				spring.getBean(JpaConfig.JPA_VALIDATION_SUPPORT_CHAIN, IValidationSupport.class)));
		// Opt-in only: a client sending "X-Retry-On-Version-Conflict: retry; max-retries=N" gets HAPI's server-side
		// retry on 409 version/conditional-create conflicts; without the header HAPI's default (no retry) applies.
		fhir.registerInterceptor(new UserRequestRetryVersionConflictsInterceptor());
		fhir.registerInterceptor(requestValidator(spring.getBean("myInstanceValidator", IInstanceValidatorModule.class)));

		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		ServletHolder holder = new ServletHolder("fhir", fhir);
		holder.setInitOrder(1);
		context.addServlet(holder, "/fhir/*");
		jetty.setHandler(context);
		jetty.setStopAtShutdown(true);
		jetty.start();
		LOG.info("HAPI test server ready at http://127.0.0.1:{}/fhir in {} ms", connector.getLocalPort(),
				(System.nanoTime() - t0) / 1_000_000);
		return jetty;
	}

	/**
	 * Every incoming resource is validated (core spec + uploaded StructureDefinitions, unknown code systems only warn);
	 * errors reject the request with 422 and an OperationOutcome. $validate is left to the operation itself so it can
	 * report its own outcome. Subscription and Basic are left to HAPI's own subscription checks: R4 backport topic
	 * subscriptions use the backport IG's profile and R5 cross-version extensions, which the offline validator lacks.
	 */
	private static RequestValidatingInterceptor requestValidator(IInstanceValidatorModule validator) {
		RequestValidatingInterceptor interceptor = new RequestValidatingInterceptor() {
			@Override
			@Hook(Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED)
			public boolean incomingRequestPostProcessed(
					RequestDetails details, HttpServletRequest request, HttpServletResponse response) {
				String type = details.getResourceName();
				if ("$validate".equals(details.getOperation()) || (type != null && UNVALIDATED_TYPES.contains(type))) {
					return true;
				}
				return super.incomingRequestPostProcessed(details, request, response);
			}
		};
		interceptor.addValidatorModule(validator);
		interceptor.setFailOnSeverity(ResultSeverityEnum.ERROR);
		interceptor.setAddResponseHeaderOnSeverity(null);
		return interceptor;
	}

	private static int port(String[] args) {
		for (int i = 0; i < args.length; i++) {
			if (args[i].equals("--port") && i + 1 < args.length) {
				return Integer.parseInt(args[i + 1]);
			}
			if (args[i].startsWith("--port=")) {
				return Integer.parseInt(args[i].substring("--port=".length()));
			}
		}
		String value = System.getProperty("server.port", System.getenv("HAPI_PORT"));
		return value == null || value.isBlank() ? 8090 : Integer.parseInt(value.trim());
	}
}
