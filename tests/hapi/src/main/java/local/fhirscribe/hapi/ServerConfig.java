package local.fhirscribe.hapi;

import ca.uhn.fhir.batch2.jobs.config.BatchCommonCtx;
import ca.uhn.fhir.batch2.jobs.expunge.DeleteExpungeAppCtx;
import ca.uhn.fhir.batch2.jobs.reindex.ReindexAppCtx;
import ca.uhn.fhir.batch2.jobs.termcodesystem.TermCodeSystemJobConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.cache.ResourceChangeListenerRegistryInterceptor;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.searchparam.submit.config.SearchParamSubmitterConfig;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.jpa.subscription.submit.interceptor.SubscriptionMatcherInterceptor;
import ca.uhn.fhir.jpa.subscription.submit.interceptor.SynchronousSubscriptionMatcherInterceptor;
import ca.uhn.fhir.jpa.topic.SubscriptionTopicConfig;
import jakarta.persistence.EntityManagerFactory;
import org.h2.jdbcx.JdbcConnectionPool;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import java.util.Properties;
import javax.sql.DataSource;

/**
 * All the Spring wiring of the test server: HAPI's own JPA (R4), subscription (rest-hook + R4 topic backport)
 * configurations, plus the few beans HAPI expects the application to supply.
 */
@Configuration
@Import({
	JpaR4Config.class, // DAOs, resource providers, validation support chain, search, terminology for R4
	HapiJpaConfig.class, // paging provider, resource counts, (disabled) fulltext service
	ThreadPoolFactoryConfig.class,
	SearchParamSubmitterConfig.class, // validates uploaded SearchParameters
	JpaBatch2Config.class, // batch2 job coordinator (required by the DAOs) ...
	BatchCommonCtx.class, // ... and only the jobs plain CRUD can trigger:
	ReindexAppCtx.class, // reindex after a SearchParameter change
	DeleteExpungeAppCtx.class, // _expunge / $expunge
	TermCodeSystemJobConfig.class, // CodeSystem replacement
	SubscriptionChannelConfig.class, // in-memory channels
	SubscriptionSubmitterConfig.class, // matcher interceptor on writes
	SubscriptionProcessorConfig.class, // matching + rest-hook delivery
	SubscriptionTopicConfig.class // R4 backport topic subscriptions (topics as Basic resources)
})
public class ServerConfig {

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Defaults kept on purpose: client ids ALPHANUMERIC (PUT Patient/demo-patient ok, purely numeric ids refused),
		// referential integrity enforced on write and delete, no placeholder reference targets.
		// Search results ARE reused for 60 s, the JPA starter's default (reuse_cached_search_results_millis): a search
		// repeated within a minute can miss what was written since. fhir-scribe's searches that decide a write or a
		// claim send Cache-Control: no-cache, and so do the tests' own checks; this keeps both honest.
		s.setReuseCachedSearchResultsForMillis(60_000L);
		s.setExpungeEnabled(true);
		s.setAllowMultipleDelete(true);
		// Background work a test server does not need (no bulk import/export, no terminology pre-expansion).
		s.setEnableTaskBulkImportJobExecution(false);
		s.setEnableTaskBulkExportJobExecution(false);
		s.setEnableTaskPreExpandValueSets(false);
		// Short batch2 jobs ($expunge, reindex after a SearchParameter change) finish in seconds, not minutes.
		s.setJobFastTrackingEnabled(true);
		return s;
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		SubscriptionSettings s = new SubscriptionSettings();
		s.addSupportedSubscriptionType(org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType.RESTHOOK);
		return s;
	}

	/**
	 * Not declared by any HAPI configuration: without it, a changed SearchParameter, Subscription or (R4 backport)
	 * SubscriptionTopic-as-Basic is only picked up by the 60 s cache poll; with it, by the next 10 s refresh.
	 */
	@Bean
	public ResourceChangeListenerRegistryInterceptor resourceChangeListenerRegistryInterceptor() {
		return new ResourceChangeListenerRegistryInterceptor();
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	/** Overrides HAPI's bean of the same name: matching is submitted right after commit instead of by a 5 s poller. */
	@Bean
	public SubscriptionMatcherInterceptor subscriptionMatcherInterceptor() {
		return new SynchronousSubscriptionMatcherInterceptor();
	}

	/** Email subscriptions are not supported here; HAPI's delivery factory still needs a sender bean. */
	@Bean
	public IEmailSender emailSender() {
		return details -> {
			throw new UnsupportedOperationException("email subscriptions are disabled in the test server");
		};
	}

	@Bean(destroyMethod = "dispose")
	public JdbcConnectionPool dataSource() {
		JdbcConnectionPool pool = JdbcConnectionPool.create("jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1", "sa", "");
		pool.setMaxConnections(40);
		return pool;
	}

	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties p = new Properties();
		p.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		p.put("hibernate.hbm2ddl.auto", "create");
		p.put("hibernate.search.enabled", "false");
		p.put("hibernate.jdbc.batch_size", "20");
		p.put("hibernate.cache.use_query_cache", "false");
		p.put("hibernate.cache.use_second_level_cache", "false");
		p.put("hibernate.cache.use_minimal_puts", "false");
		emf.setJpaProperties(p);
		return emf;
	}

	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory emf) {
		return new JpaTransactionManager(emf);
	}
}
